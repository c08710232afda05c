package pgdlock

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestURLSettings: what a URL hands to pgx, as libpq would read it: the
// authority's user, hosts and ports, the path's database, then the libpq
// query parameters, which win; the password is kept apart.
func TestURLSettings(t *testing.T) {
	tests := []struct {
		url, want, password string
	}{
		{"postgres://app:pw@db.example:5433/locks", "dbname='locks' host='db.example' port='5433' user='app'", "pw"},
		{"postgres://%2Frun%2Fpostgresql/app", "dbname='app' host='/run/postgresql'", ""},
		{"postgres://%2Frun%2Fpostgresql:5433/app", "dbname='app' host='/run/postgresql' port='5433'", ""},
		{"postgres:///app?host=/run/postgresql", "dbname='app' host='/run/postgresql'", ""},
		{"postgres:///?host=/tmp&dbname=app&user=u&password=p%27w&port=1", "dbname='app' host='/tmp' port='1' user='u'", "p'w"},
		{"postgres://h1:1,h2,h3:3/db?target_session_attrs=read-write", "dbname='db' host='h1,h2,h3' port='1,,3' target_session_attrs='read-write' user=''", ""},
		{"postgresql://u@h/db?database=other&sslmode=verify-full&options=-c%20x%3Dy", "dbname='other' host='h' options='-c x=y' sslmode='verify-full' user='u'", ""},
		{"postgres://h/db?application_name=it%27s%5C", `application_name='it\'s\\' dbname='db' host='h'`, ""},
	}
	for _, tc := range tests {
		u, err := driver.ParseURL(tc.url)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", tc.url, err)
		}
		s := urlSettings(u)
		for _, name := range passThrough {
			if u.Has(name) {
				s[name] = u.String(name, "")
			}
		}
		if v, ok := s["database"]; ok {
			delete(s, "database")
			s["dbname"] = v
		}
		pw := s["password"]
		delete(s, "password")
		want := strings.ReplaceAll(tc.want, " user=''", "")
		if got := keywordValue(s); got != want || pw != tc.password {
			t.Errorf("%s:\n got %s (password %q)\nwant %s (password %q)", tc.url, got, pw, want, tc.password)
		}
		if _, err := pgxpool.ParseConfig(keywordValue(s)); err != nil {
			t.Errorf("%s: pgx refuses %s: %v", tc.url, keywordValue(s), err)
		}
	}
}

// TestOpenURLErrors: URL errors name the problem, never the password, and
// never call a missing password anything else.
func TestOpenURLErrors(t *testing.T) {
	t.Setenv("PGHOST", "")
	t.Setenv("PGSERVICE", "")
	const pw = "s3cret-Pa55"
	tests := []struct{ url, want string }{
		{"postgres:///app", "postgres URL names no host"},
		{"postgres://u:" + pw + "@/app", "postgres URL names no host"},
		{"postgresql:///app?sslmode=disable", "postgresql URL names no host"},
		{"postgres://u:" + pw + "@127.0.0.1:1/app?sslmode=sometimes", "sslmode"},
		{"postgres://127.0.0.1:1/app?sslpassword=" + pw + "&sslmode=nope", "sslmode"},
		{"postgres://127.0.0.1:1/app?password=" + pw + "&target_session_attrs=x", "target_session_attrs"},
		{"postgres://u:" + pw + "@127.0.0.1:1/app?hostaddr=127.0.0.1", "hostaddr"},
		{"postgres://u:" + pw + "@127.0.0.1:1/app#x", "fragment"},
		{"postgres://u:" + pw + "@127.0.0.1:1/app?search_path=x", "search_path"},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, err := dlock.Open(ctx, tc.url)
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("Open(%q) succeeded, want ErrInvalidOption", tc.url)
			continue
		}
		msg := err.Error()
		if !errors.Is(err, dlock.ErrInvalidOption) || !strings.Contains(msg, tc.want) {
			t.Errorf("Open(%q) = %v, want ErrInvalidOption containing %q", tc.url, err, tc.want)
		}
		if strings.Contains(msg, pw) || strings.Contains(msg, "special character") {
			t.Errorf("Open(%q) = %q: shows the password or blames special characters", tc.url, msg)
		}
	}
	// The same through Open with a keyword/value string.
	for _, dsn := range []string{
		"host=127.0.0.1 port=1 password='" + pw + "' sslmode=sometimes",
		"host=127.0.0.1 password=" + pw + " sslmode=sometimes",
		"host=127.0.0.1 password='" + pw + " with 'quote sslmode=disable",
	} {
		_, err := OpenDriver(t.Context(), dsn, Config{})
		if !errors.Is(err, dlock.ErrInvalidOption) || strings.Contains(err.Error(), pw) {
			t.Errorf("OpenDriver(%q) = %v, want ErrInvalidOption without the password", dsn, err)
		}
	}
}

// TestConnectForms: each documented form reaches the server: TCP with the
// libpq query parameters, the Unix socket as a host parameter and as a
// percent-encoded host, a keyword/value string through Open.
func TestConnectForms(t *testing.T) {
	pg := testserver.StartPostgres(t)
	port := strconv.Itoa(pg.Port)
	sockHost := strings.ReplaceAll(url.PathEscape(pg.SocketDir), "/", "%2F")
	tcpQuery := "host=127.0.0.1&port=" + port + "&user=" + url.QueryEscape(pg.User) +
		"&password=" + url.QueryEscape(pg.Password) + "&sslmode=disable&dbname=" + pg.Database
	urls := []string{
		"postgres:///?" + tcpQuery,
		"postgres://nobody:wrong@203.0.113.1:9/nodb?" + tcpQuery, // query parameters win
		"postgres:///" + pg.Database + "?host=" + url.QueryEscape(pg.SocketDir) + "&port=" + port + "&user=" + pg.User,
		"postgres://" + pg.User + "@" + sockHost + ":" + port + "/" + pg.Database,
		"postgresql://" + pg.User + "@" + sockHost + ":" + port + "/" + pg.Database + "?sslmode=disable&application_name=dlock-test&channel_binding=disable&table=socket_locks",
	}
	for _, raw := range urls {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		c, err := dlock.Open(ctx, raw)
		if err != nil {
			cancel()
			t.Errorf("Open(%s): %v", raw, err)
			continue
		}
		l, err := c.TryLock(ctx, "forms")
		if err != nil {
			t.Errorf("TryLock via %s: %v", raw, err)
		} else if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock via %s: %v", raw, err)
		}
		c.Close()
		cancel()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"host=" + pg.SocketDir + " port=" + port + " user=" + pg.User + " dbname=" + pg.Database,
		"host=127.0.0.1 port=" + port + " user=" + pg.User + " password='" + pg.Password + "' sslmode=disable dbname=" + pg.Database,
		pg.URL(),
	} {
		c, err := Open(ctx, dsn, Config{Table: "dsn_locks"})
		if err != nil {
			t.Errorf("Open(%q): %v", strings.ReplaceAll(dsn, pg.Password, "xxxxx"), err)
			continue
		}
		if _, err := c.TryLock(ctx, "dsn"); err != nil {
			t.Errorf("TryLock via a keyword/value string: %v", err)
		}
		c.Close()
	}
}
