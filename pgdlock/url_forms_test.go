package pgdlock

import (
	"context"
	"errors"
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

// TestOpenDSNErrors: a keyword/value string's errors match
// ErrInvalidOption and never show the password.
func TestOpenDSNErrors(t *testing.T) {
	const pw = "s3cret-Pa55"
	// The same through Open with a keyword/value string.
	for _, dsn := range []string{
		"host=127.0.0.1 port=1 password='" + pw + "' sslmode=sometimes",
		"host=127.0.0.1 password=" + pw + " sslmode=sometimes",
		"host=127.0.0.1 password='" + pw + " with 'quote sslmode=disable",
	} {
		_, err := OpenDriver(t.Context(), dsn, Options{})
		if !errors.Is(err, dlock.ErrInvalidOption) || strings.Contains(err.Error(), pw) {
			t.Errorf("OpenDriver(%q) = %v, want ErrInvalidOption without the password", dsn, err)
		}
	}
}

// TestConnectDSN: a keyword/value string (TCP and the Unix socket) and a
// URL reach the server through Open.
func TestConnectDSN(t *testing.T) {
	pg := testserver.StartPostgres(t)
	port := strconv.Itoa(pg.Port)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"host=" + pg.SocketDir + " port=" + port + " user=" + pg.User + " dbname=" + pg.Database,
		"host=127.0.0.1 port=" + port + " user=" + pg.User + " password='" + pg.Password + "' sslmode=disable dbname=" + pg.Database,
		pg.URL(),
	} {
		c, err := Open(ctx, dsn, Options{Table: "dsn_locks"})
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
