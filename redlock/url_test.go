package redlock_test

import (
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redlock"
)

func TestSchemesRegistered(t *testing.T) {
	for _, s := range []string{"redlock", "redlocks"} {
		if !slices.Contains(dlock.Schemes(), s) {
			t.Errorf("scheme %q not registered; have %v", s, dlock.Schemes())
		}
	}
}

// TestOpenURL opens URLs without contacting a server (Open is lazy).
func TestOpenURL(t *testing.T) {
	tests := []struct {
		url    string
		nodes  int
		prefix string
	}{
		{"redlock://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 3, ""},
		{"redlock://127.0.0.1", 1, ""},
		{"redlock://u:p@h1,h2:7000,h3:7001/2?prefix=app:", 3, "app:"},
		{"redlock://127.0.0.1:1,127.0.0.1:2?node_timeout=20ms&dial_timeout=1s&read_timeout=250ms&write_timeout=2&pool_size=3&fence_ttl=48h", 2, ""},
		{"redlocks://127.0.0.1:1,127.0.0.1:2?tls_server_name=redis.example&tls_insecure_skip_verify=true", 2, ""},
	}
	for _, tc := range tests {
		u, err := driver.ParseURL(tc.url)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", tc.url, err)
		}
		l, err := redlock.OpenURL(context.Background(), u)
		if err != nil {
			t.Errorf("OpenURL(%q): %v", tc.url, err)
			continue
		}
		d := l.(*redlock.Driver)
		if got := len(d.Nodes()); got != tc.nodes {
			t.Errorf("OpenURL(%q): %d nodes, want %d", tc.url, got, tc.nodes)
		}
		if got, want := d.Quorum(), tc.nodes/2+1; got != want {
			t.Errorf("OpenURL(%q): quorum %d, want %d", tc.url, got, want)
		}
		if got := d.Nodes()[0].Prefix(); got != tc.prefix {
			t.Errorf("OpenURL(%q): prefix %q, want %q", tc.url, got, tc.prefix)
		}
		_ = l.Close()
	}
}

func TestOpenURLInvalid(t *testing.T) {
	const pw = "pa55word-in-url"
	tests := []string{
		"redlock://",
		"redlock://127.0.0.1:1?unknown=1",
		"redlock://127.0.0.1:1,127.0.0.1:1",
		"redlock://127.0.0.1:1,,127.0.0.1:2",
		"redlock://127.0.0.1:99999",
		"redlock://127.0.0.1:1/x",
		"redlock://127.0.0.1:1?node_timeout=0",
		"redlock://127.0.0.1:1?node_timeout=soon",
		"redlock://127.0.0.1:1?pool_size=0",
		"redlock://127.0.0.1:1?fence_ttl=1ms",
		"redlock://127.0.0.1:1?prefix=%7B",
		"redlock://127.0.0.1:1?tls_insecure_skip_verify=true",
		"redlock://127.0.0.1:1?sentinel_password=x",
		"redlocks://127.0.0.1:1?tls_ca_file=/does/not/exist",
		"redlock://:" + pw + "@127.0.0.1:1?bogus=1",
	}
	for _, raw := range tests {
		c, err := dlock.Open(context.Background(), raw)
		if err == nil {
			_ = c.Close()
			t.Errorf("Open(%q) succeeded, want ErrInvalidOption", raw)
			continue
		}
		if !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("Open(%q) = %v, want ErrInvalidOption", raw, err)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("Open(%q) error %q shows the password", raw, err)
		}
	}
}

// TestOpenURLNeedsHost: a URL without nodes, or without the "//" that
// introduces them, is an error naming the scheme and what is missing.
func TestOpenURLNeedsHost(t *testing.T) {
	const pw = "pa55word-in-url"
	tests := []struct{ url, want string }{
		{"redlock:127.0.0.1:1,127.0.0.1:2", `redlock URL is missing the "//"`},
		{"redlock:app:" + pw + "@127.0.0.1:1/0", `redlock URL is missing the "//"`},
		{"redlocks:/app:" + pw + "@127.0.0.1:1/0", `redlocks URL is missing the "//"`},
		{"redlock://", "redlock URL names no host"},
		{"redlock://:" + pw + "@/0", "redlock URL names no host"},
		{"redlock://%2Ftmp%2Fredis.sock/0", "not valid"},
	}
	for _, tc := range tests {
		c, err := dlock.Open(t.Context(), tc.url)
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

func TestNewDriverInvalid(t *testing.T) {
	if _, err := redlock.NewDriver([]*redis.Client{}, redlock.Options{}); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("NewDriver(no clients) = %v, want ErrInvalidOption", err)
	}
	if _, err := redlock.NewDriver([]*redis.Client{nil}, redlock.Options{}); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("NewDriver(nil client) = %v, want ErrInvalidOption", err)
	}
	if _, err := redlock.NewDriver([]redis.UniversalClient{nil}, redlock.Options{}); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("NewDriver(nil interface) = %v, want ErrInvalidOption", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, o := range []redlock.Options{{NodeTimeout: -1}, {Prefix: "a{"}, {FenceTTL: time.Millisecond}} {
		if _, err := redlock.NewDriver([]*redis.Client{rdb}, o); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("NewDriver(%+v) = %v, want ErrInvalidOption", o, err)
		}
	}
}

// TestTLSAndAuth opens redlocks:// with a password against TLS nodes, and
// fails cleanly (naming nodes, not the password) with a wrong one.
func TestTLSAndAuth(t *testing.T) {
	nodes := startNodes(t, 3, testserver.RedisTLS(), testserver.RedisPassword("s3cret-rl"))
	ctx := testCtx(t, 30*time.Second)
	// Each node has its own CA; trust them all for the test.
	c := openURL(t, testserver.RedlockURL(nodes...)+"?tls_insecure_skip_verify=true")
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock over TLS with a password: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	bad := openURL(t, strings.Replace(testserver.RedlockURL(nodes...), "s3cret-rl", "wrong-pw", 1)+"?tls_insecure_skip_verify=true")
	_, err = bad.TryLock(ctx, "k")
	if !errors.Is(err, dlock.ErrUnavailable) || strings.Contains(err.Error(), "wrong-pw") || !strings.Contains(err.Error(), nodes[0].Addr()) {
		t.Fatalf("TryLock with a wrong password = %v; want ErrUnavailable naming %s without the password", err, nodes[0].Addr())
	}
}

// TestURLOpener: a configured URLOpener's Options, TLSConfig and
// ClientOptions reach every node; the URL's parameters override the
// Options and TLSConfig defaults, and the hook has the last word.
func TestURLOpener(t *testing.T) {
	nodes := startNodes(t, 3)
	ctx := testCtx(t, 30*time.Second)
	var seen []redis.Options
	codeTLS := &tls.Config{ServerName: "code.example"}
	o := &redlock.URLOpener{
		Options:   redlock.Options{Prefix: "code:", FenceTTL: 2 * time.Hour},
		TLSConfig: codeTLS,
		ClientOptions: func(ro *redis.Options) {
			seen = append(seen, *ro)
			ro.ClientName = "from-code"
		},
	}
	open := func(raw string) *redlock.Driver {
		t.Helper()
		u, err := driver.ParseURL(raw)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", raw, err)
		}
		l, err := o.OpenLockerURL(ctx, u)
		if err != nil {
			t.Fatalf("OpenLockerURL(%q): %v", raw, err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l.(*redlock.Driver)
	}

	seen = nil
	d := open(testserver.RedlockURL(nodes...) + "/2")
	if len(seen) != len(nodes) {
		t.Fatalf("ClientOptions called %d times, want once per node (%d)", len(seen), len(nodes))
	}
	for i, ro := range seen {
		if ro.Addr != nodes[i].Addr() || ro.DB != 2 || !ro.ContextTimeoutEnabled || ro.MaxRetries != -1 || ro.TLSConfig != nil {
			t.Errorf("node %d: ClientOptions saw %+v, want its address, DB 2, context deadlines, no retries, no TLS", i, ro)
		}
	}
	if got := d.Nodes()[0].Prefix(); got != "code:" {
		t.Errorf("prefix %q, want the Options default %q", got, "code:")
	}
	if res, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	_, fence, _ := d.Nodes()[0].Keys("k")
	rdb := redis.NewClient(&redis.Options{Addr: nodes[0].Addr(), DB: 2})
	defer rdb.Close()
	if ttl := rdb.PTTL(ctx, fence).Val(); ttl <= time.Hour || ttl > 2*time.Hour {
		t.Errorf("fence counter PTTL %v, want Options.FenceTTL (2h)", ttl)
	}
	if list, err := rdb.ClientList(ctx).Result(); err != nil || !strings.Contains(list, "name=from-code") {
		t.Errorf("CLIENT LIST = %q, %v; want a connection named by the hook", list, err)
	}
	if got := open(testserver.RedlockURL(nodes...) + "?prefix=url:").Nodes()[0].Prefix(); got != "url:" {
		t.Errorf("prefix %q, want the URL's %q", got, "url:")
	}

	open("redlocks://127.0.0.1:1,127.0.0.1:2?tls_server_name=url.example")
	for _, ro := range seen[len(seen)-2:] {
		if ro.TLSConfig == nil || ro.TLSConfig == codeTLS || ro.TLSConfig.ServerName != "url.example" || codeTLS.ServerName != "code.example" {
			t.Errorf("node %s: TLS config %+v, want a clone of the opener's with the URL's server name", ro.Addr, ro.TLSConfig)
		}
	}
}
