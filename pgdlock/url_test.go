package pgdlock

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestURLs: the URLs and errors every SQL driver checks (see
// drivertest.RunURLTests), here with PostgreSQL's parameters and forms.
func TestURLs(t *testing.T) {
	t.Setenv("PGHOST", "")
	t.Setenv("PGSERVICE", "")
	pg := testserver.StartPostgres(t)
	const pw = "s3cret-Pa55"
	// Nothing listens here; every invalid case must fail before connecting.
	base := "postgres://u:" + pw + "@" + testserver.Addr(testserver.FreePort(t)) + "/db?sslmode=disable"
	port := strconv.Itoa(pg.Port)
	sockHost := strings.ReplaceAll(url.PathEscape(pg.SocketDir), "/", "%2F")
	tcpQuery := "host=127.0.0.1&port=" + port + "&user=" + url.QueryEscape(pg.User) +
		"&password=" + url.QueryEscape(pg.Password) + "&sslmode=disable&dbname=" + pg.Database
	cases := drivertest.URLCases{
		Secret: pw,
		Valid: []string{
			"postgres:///?" + tcpQuery,
			"postgres://nobody:wrong@203.0.113.1:9/nodb?" + tcpQuery, // query parameters win
			"postgres:///" + pg.Database + "?host=" + url.QueryEscape(pg.SocketDir) + "&port=" + port + "&user=" + pg.User,
			"postgres://" + pg.User + "@" + sockHost + ":" + port + "/" + pg.Database,
			"postgresql://" + pg.User + "@" + sockHost + ":" + port + "/" + pg.Database + "?sslmode=disable&application_name=dlock-test&channel_binding=disable&table=socket_locks",
		},
		Unreachable:      func(addr string) string { return "postgres://dlock:" + pw + "@" + addr + "/db?sslmode=disable" },
		Backend:          "postgres",
		WrongSecret:      strings.Replace(pg.URL(), pg.Password, pw, 1),
		MissingTable:     pg.URL() + "&table=nosuch&create_table=false",
		MissingTableName: "nosuch",
		ConcurrentCreate: pg.URL() + "&table=locking.racing&pool_max_conns=1",
	}
	for _, q := range []string{
		"&table=locking.leases&application_name=dlock-test&connect_timeout=5&pool_max_conns=3",
		"&table=Mixed_Case",
		"&table=mixed_case",
		"&table=locking.leases&create_table=false",
		"&notify=false",
	} {
		cases.Valid = append(cases.Valid, pg.URL()+q, "postgresql://"+strings.TrimPrefix(pg.URL(), "postgres://")+q)
	}
	for _, bad := range [][2]string{
		{"&tabel=x", "tabel"},
		{"&search_path=x", "search_path"},
		{"&table=a&table=b", "table"},
		{"&table=a.b.c", "a.b.c"},
		{"&table=1locks", "1locks"},
		{"&table=my-locks", "my-locks"},
		{"&table=%22x%22", `x`},
		{"&table=", "table"},
		{"&table=" + strings.Repeat("t", 64), "table"},
		{"&create_table=maybe", "create_table"},
		{"&notify=2", "notify"},
	} {
		cases.Invalid = append(cases.Invalid, drivertest.InvalidURL{URL: base + bad[0], Want: bad[1]})
	}
	for _, bad := range [][2]string{
		{"postgres:///app", "postgres URL names no host"},
		{"postgres://u:" + pw + "@/app", "postgres URL names no host"},
		{"postgresql:///app?sslmode=disable", "postgresql URL names no host"},
		{"postgres://u:" + pw + "@127.0.0.1:1/app?sslmode=sometimes", "sslmode"},
		{"postgres://127.0.0.1:1/app?sslpassword=" + pw + "&sslmode=nope", "sslmode"},
		{"postgres://127.0.0.1:1/app?password=" + pw + "&target_session_attrs=x", "target_session_attrs"},
		{"postgres://u:" + pw + "@127.0.0.1:1/app?hostaddr=127.0.0.1", "hostaddr"},
		{"postgres://u:" + pw + "@127.0.0.1:1/app#x", "fragment"},
	} {
		cases.Invalid = append(cases.Invalid, drivertest.InvalidURL{URL: bad[0], Want: bad[1]})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `CREATE SCHEMA locking`); err != nil {
		t.Fatal(err)
	}
	drivertest.RunURLTests(t, cases)
	var n int
	err = admin.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE tablename IN ('Mixed_Case', 'mixed_case', 'leases')`).Scan(&n)
	if err != nil || n != 3 {
		t.Fatalf("tables made: %d, %v; want 3 (names are case-sensitive)", n, err)
	}
}

// TestURLOpener: the notify parameter, and a URLOpener's settings reaching
// the driver (Options and the pool hook), with a URL parameter winning over
// the Options field it names.
func TestURLOpener(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	coded := &URLOpener{
		Options: Options{Table: "coded_locks", DisableNotify: true},
		ConfigurePool: func(c *pgxpool.Config) {
			c.ConnConfig.RuntimeParams["application_name"] = "dlock-coded"
		},
	}
	for _, tc := range []struct {
		o             *URLOpener
		query, table  string
		notify, named bool
	}{
		{&URLOpener{}, "", DefaultTable, true, false},
		{&URLOpener{}, "&notify=true", DefaultTable, true, false},
		{&URLOpener{}, "&notify=false", DefaultTable, false, false},
		{coded, "", "coded_locks", false, true},
		{coded, "&notify=true&table=url_locks", "url_locks", true, true},
	} {
		d := drivertest.OpenURL(ctx, t, tc.o, pg.URL()+tc.query)
		if _, ok := d.(driver.Notifier); ok != tc.notify {
			t.Errorf("%q: driver is a Notifier: %v, want %v", tc.query, ok, tc.notify)
		}
		var tables, named int
		err = admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_tables WHERE tablename = $1),
			(SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dlock-coded')`, tc.table).Scan(&tables, &named)
		if err != nil || tables != 1 || (named > 0) != tc.named {
			t.Errorf("%q: table %s made: %d, connections of the hook's application_name: %d, %v; want 1 and %v",
				tc.query, tc.table, tables, named, err, tc.named)
		}
		d.Close()
	}
}
