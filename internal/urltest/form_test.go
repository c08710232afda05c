package urltest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"context"

	"github.com/dlock-go/dlock"
)

// TestURLNeedsHost: on every scheme that needs a server, a URL without a
// host, or without the "//" that introduces one, is an error matching
// ErrInvalidOption that names the scheme and what is missing, and never the
// password; it is not a client of some default server.
func TestURLNeedsHost(t *testing.T) {
	const pw = "pa55word-in-url"
	const noSlashes = `URL is missing the "//"`
	const noHost = "URL names no host"
	tests := []struct{ url, want string }{
		{"redis:127.0.0.1:1", "redis " + noSlashes},
		{"redis:app:" + pw + "@127.0.0.1:1/0", "redis " + noSlashes},
		{"redis:/app:" + pw + "@127.0.0.1:1/0", "redis " + noSlashes},
		{"redis://", "redis " + noHost},
		{"rediss+cluster:///", "rediss+cluster " + noHost},
		{"redis+sentinel:///mymaster", "redis+sentinel " + noHost},
		{"redlock:127.0.0.1:1,127.0.0.1:2", "redlock " + noSlashes},
		{"redlocks://:" + pw + "@/0", "redlocks " + noHost},
		{"etcd:127.0.0.1:1", "etcd " + noSlashes},
		{"etcd:/app:" + pw + "@127.0.0.1:1", "etcd " + noSlashes},
		{"etcds://app:" + pw + "@", "etcds " + noHost},
		{"etcd://", "etcd " + noHost},
		{"zk:127.0.0.1:1/locks", "zk " + noSlashes},
		{"zk:/locks", "zk " + noSlashes},
		{"zk:///locks", "zk " + noHost},
		{"zk://app:" + pw + "@/locks", "zk " + noHost},
		{"mysql:app:" + pw + "@127.0.0.1:1/db", "mysql " + noSlashes},
		{"mysql:/app:" + pw + "@127.0.0.1:1/db", "mysql " + noSlashes},
		{"mysql:///db", "mysql " + noHost},
		{"mysql://app:" + pw + "@/db", "mysql " + noHost},
		{"postgres:app:" + pw + "@127.0.0.1:1/db", "postgres " + noSlashes},
		{"postgresql:/app:" + pw + "@127.0.0.1:1/db", "postgresql " + noSlashes},
		{"mem:name", "mem " + noSlashes},
		{"mem:/name", "mem " + noSlashes},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, err := dlock.Open(ctx, tc.url)
		cancel()
		if err == nil {
			_ = c.Close()
			t.Errorf("Open(%q) succeeded, want ErrInvalidOption", tc.url)
			continue
		}
		if !errors.Is(err, dlock.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want ErrInvalidOption containing %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("Open(%q) error %q shows the password", tc.url, err)
		}
	}
}

// TestURLDefaults: the schemes with a documented default still open
// without a host.
func TestURLDefaults(t *testing.T) {
	dir := t.TempDir()
	for _, raw := range []string{"mem://", "mem://name", "sqlite://" + dir + "/a.db", "sqlite:" + dir + "/b.db"} {
		c, err := dlock.Open(t.Context(), raw)
		if err != nil {
			t.Errorf("Open(%q) = %v, want a client", raw, err)
			continue
		}
		_ = c.Close()
	}
}
