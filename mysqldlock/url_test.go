package mysqldlock

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestURLs: the URLs and errors every SQL driver checks (see
// drivertest.RunURLTests), here with MySQL's parameters and forms.
func TestURLs(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	const pw = "s3cret-Pa55"
	// Nothing listens here; every invalid case must fail before connecting.
	base := "mysql://u:" + pw + "@" + testserver.Addr(testserver.FreePort(t))
	userinfo := url.UserPassword(srv.User, srv.Password).String()
	sockHost := strings.ReplaceAll(url.PathEscape(srv.Socket), "/", "%2F")
	cases := drivertest.URLCases{
		Secret: pw,
		Valid: []string{
			srv.URL() + "?readTimeout=30s&writeTimeout=30s&checkConnLiveness=false&rejectReadOnly=true&maxAllowedPacket=0&connectionAttributes=app:test&allowNativePasswords=true&compress=true",
			"mysql://" + userinfo + "@/" + srv.Database + "?socket=" + url.QueryEscape(srv.Socket),
			"mysql://" + userinfo + "@" + sockHost + "/" + srv.Database,
			"mysql://" + userinfo + "@unix(" + srv.Socket + ")/" + srv.Database,
			srv.URL() + "?table=locking.leases&timeout=5s",
			srv.URL() + "?table=locking.leases&create_table=false",
			srv.URL() + "?tls=preferred",
			srv.URL() + "?tls=false&timeout=3",
			srv.URL() + "?table=other_locks",
		},
		Unreachable:      func(addr string) string { return "mysql://dlock:" + pw + "@" + addr + "/db" },
		Backend:          "mysql",
		WrongSecret:      strings.Replace(srv.URL(), srv.Password, pw, 1),
		WrongSecretAddr:  srv.Addr(),
		MissingTable:     srv.URL() + "?table=nosuch&create_table=false",
		MissingTableName: "nosuch",
		ConcurrentCreate: srv.URL() + "?table=locking.racing",
	}
	for _, bad := range [][2]string{
		{"/db?tabel=x", "tabel"},
		{"/db?parseTime=true", "parseTime"},
		{"/db?table=a&table=b", "table"},
		{"/db?table=a.b.c", "a.b.c"},
		{"/db?table=a%60b", "table"},
		{"/db?table=", "table"},
		{"/db?tls=maybe", "tls"},
		{"/db?create_table=2", "create_table"},
		{"/db?timeout=soon", "timeout"},
		{"", "database"},
		{"/db/x", "database"},
		{"/db?multiStatements=true", "multiStatements"},
		{"/db?clientFoundRows=true", "clientFoundRows"},
		{"/db?loc=Local", "loc"},
		{"/db?readTimeout=soon", "readTimeout"},
		{"/db?writeTimeout=-1s", "writeTimeout"},
		{"/db?maxAllowedPacket=-1", "maxAllowedPacket"},
		{"/db?rejectReadOnly=maybe", "rejectReadOnly"},
		{"/db?socket=/run/mysqld.sock", "both a host and a socket"},
		{"/db#x", "fragment"},
	} {
		cases.Invalid = append(cases.Invalid, drivertest.InvalidURL{URL: base + bad[0], Want: bad[1]})
	}
	for _, bad := range [][2]string{
		{"mysql://u:" + pw + "@/db", "mysql URL names no host"},
		{"mysql://u:" + pw + "@/db?socket=relative.sock", "absolute"},
		{"mysql://u:" + pw + "@/db?socket=/x.sock&tls=true", "tls"},
		{"mysql://u:" + pw + "@unix(/x.sock/db", "unix("},
	} {
		cases.Invalid = append(cases.Invalid, drivertest.InvalidURL{URL: bad[0], Want: bad[1]})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	root, err := srv.RootDB()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.ExecContext(ctx, "CREATE DATABASE locking"); err != nil {
		t.Fatal(err)
	}
	drivertest.RunURLTests(t, cases)
	var n int
	err = root.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables
		WHERE (table_schema, table_name) IN (('locking', 'leases'), ('dlock', 'other_locks'))`).Scan(&n)
	if err != nil || n != 2 {
		t.Fatalf("tables made: %d, %v; want 2", n, err)
	}
}

// TestURLOpener: tls=true against a plain-text server, the driver is a
// Notifier, and a URLOpener's settings reach the driver (Options and the
// go-sql-driver hook), with a URL parameter winning over the Options field
// it names.
func TestURLOpener(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	root, err := srv.RootDB()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.ExecContext(ctx, "CREATE DATABASE coded"); err != nil {
		t.Fatal(err)
	}

	t.Run("tls=true without server TLS", func(t *testing.T) {
		_, err := dlock.Open(ctx, srv.URL()+"?tls=true")
		if !errors.Is(err, dlock.ErrUnavailable) {
			t.Fatalf("Open with tls=true against a plain-text server = %v, want ErrUnavailable", err)
		}
	})

	t.Run("is a notifier", func(t *testing.T) {
		u, _ := driver.ParseURL(srv.URL())
		d, err := OpenURL(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if _, ok := d.(driver.Notifier); !ok {
			t.Error("driver is not a Notifier")
		}
	})

	coded := &URLOpener{
		Options:        Options{Table: "coded_locks", SkipCreateTable: true},
		ConfigureMySQL: func(c *mysql.Config) { c.DBName = "coded" }, // wins over the URL's database
	}
	for _, tc := range []struct{ query, table string }{
		{"?create_table=true", "coded_locks"},
		{"?table=url_locks&create_table=true", "url_locks"},
		{"", "coded_locks"}, // exists now, and SkipCreateTable applies
	} {
		d := drivertest.OpenURL(ctx, t, coded, srv.URL()+tc.query)
		var tables int
		err := root.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'coded' AND table_name = ?`, tc.table).Scan(&tables)
		d.Close()
		if err != nil || tables != 1 {
			t.Errorf("%q: table coded.%s made: %d, %v; want 1", tc.query, tc.table, tables, err)
		}
	}
	u, _ := driver.ParseURL(srv.URL() + "?table=none_locks")
	if _, err := coded.OpenLockerURL(ctx, u); err == nil || !strings.Contains(err.Error(), "none_locks") {
		t.Errorf("OpenLockerURL with SkipCreateTable and no table = %v, want an error naming none_locks", err)
	}
}
