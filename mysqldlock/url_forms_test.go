package mysqldlock

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestURLFormErrors: the forms and parameters a mysql URL refuses, each
// with an error that names the problem and never the password.
func TestURLFormErrors(t *testing.T) {
	const pw = "s3cret-Pa55"
	base := "mysql://u:" + pw + "@127.0.0.1:1/db"
	tests := []struct{ url, want string }{
		{"mysql://u:" + pw + "@/db", "mysql URL names no host"},
		{base + "?multiStatements=true", "multiStatements"},
		{base + "?clientFoundRows=true", "clientFoundRows"},
		{base + "?loc=Local", "loc"},
		{base + "?readTimeout=soon", "readTimeout"},
		{base + "?writeTimeout=-1s", "writeTimeout"},
		{base + "?maxAllowedPacket=-1", "maxAllowedPacket"},
		{base + "?rejectReadOnly=maybe", "rejectReadOnly"},
		{base + "?socket=/run/mysqld.sock", "both a host and a socket"},
		{"mysql://u:" + pw + "@/db?socket=relative.sock", "absolute"},
		{"mysql://u:" + pw + "@/db?socket=/x.sock&tls=true", "tls"},
		{"mysql://u:" + pw + "@unix(/x.sock/db", "unix("},
		{base + "#x", "fragment"},
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
		if !errors.Is(err, dlock.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want ErrInvalidOption containing %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "special character") {
			t.Errorf("Open(%q) = %q: shows the password or blames special characters", tc.url, err)
		}
	}
}

// TestConnectForms: the socket forms and the pass-through parameters reach
// the server.
func TestConnectForms(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	userinfo := url.UserPassword(srv.User, srv.Password).String()
	sockHost := strings.ReplaceAll(url.PathEscape(srv.Socket), "/", "%2F")
	urls := []string{
		srv.URL() + "?readTimeout=30s&writeTimeout=30s&checkConnLiveness=false&rejectReadOnly=true&maxAllowedPacket=0&connectionAttributes=app:test&allowNativePasswords=true&compress=true",
		"mysql://" + userinfo + "@/" + srv.Database + "?socket=" + url.QueryEscape(srv.Socket),
		"mysql://" + userinfo + "@" + sockHost + "/" + srv.Database,
		"mysql://" + userinfo + "@unix(" + srv.Socket + ")/" + srv.Database,
	}
	for _, raw := range urls {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		c, err := dlock.Open(ctx, raw)
		if err != nil {
			cancel()
			t.Errorf("Open(%s): %v", strings.ReplaceAll(raw, srv.Password, "xxxxx"), err)
			continue
		}
		l, err := c.TryLock(ctx, "forms")
		if err != nil {
			t.Errorf("TryLock: %v", err)
		} else if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock: %v", err)
		}
		c.Close()
		cancel()
	}
}
