package redlock_test

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redlock"
)

// TestURLs: drivertest.RunURLTests with redlock:// and redlocks:// URLs
// (the refusals every Redis URL shares are redistest.InvalidURLs'), on
// plain nodes and on TLS nodes with a password; then a wrong password,
// which the first lock call meets (opening is lazy), and forms opened
// without contacting the nodes, with the nodes, quorum and key prefix each
// gives the driver.
func TestURLs(t *testing.T) {
	url := testserver.RedlockURL(startNodes(t, 3)...)
	tlsNodes := startNodes(t, 3, testserver.RedisTLS(), testserver.RedisPassword("s3cret-rl"))
	// Each TLS node has its own CA; trust them all for the test.
	tlsURL := testserver.RedlockURL(tlsNodes...) + "?tls_insecure_skip_verify=true"
	drivertest.RunURLTests(t, drivertest.URLCases{
		Secret: redistest.Secret,
		Valid:  []string{url, url + "/2?prefix=app:", url + "?node_timeout=2s&dial_timeout=1s&read_timeout=250ms&write_timeout=2&pool_size=3&fence_ttl=48h", tlsURL},
		Invalid: append(redistest.InvalidURLs(redlock.Scheme, redlock.SchemeTLS), []drivertest.InvalidURL{
			{URL: "redlock://127.0.0.1:1,127.0.0.1:1", Want: "names node 127.0.0.1:1 twice"},
			{URL: "redlock://127.0.0.1:1?node_timeout=0", Want: "node_timeout"},
			{URL: "redlock://127.0.0.1:1?node_timeout=soon", Want: "node_timeout"},
		}...),
	})

	_, err := openURL(t, strings.Replace(tlsURL, "s3cret-rl", "wrong-pw", 1)).TryLock(testCtx(t, 30*time.Second), "k")
	if !errors.Is(err, dlock.ErrUnavailable) || strings.Contains(err.Error(), "wrong-pw") || !strings.Contains(err.Error(), tlsNodes[0].Addr()) {
		t.Fatalf("TryLock with a wrong password = %v; want ErrUnavailable naming %s without the password", err, tlsNodes[0].Addr())
	}

	for _, tc := range []struct {
		url    string
		nodes  int
		prefix string
	}{
		{"redlock://127.0.0.1", 1, ""},
		{"redlock://u:p@h1,h2:7000,h3:7001/2?prefix=app:", 3, "app:"},
		{"redlock://127.0.0.1:1,127.0.0.1:2?node_timeout=20ms", 2, ""},
		{"redlocks://127.0.0.1:1,127.0.0.1:2?tls_server_name=redis.example&tls_insecure_skip_verify=true", 2, ""},
	} {
		u, err := driver.ParseURL(tc.url)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", tc.url, err)
		}
		l, err := redlock.OpenURL(t.Context(), u)
		if err != nil {
			t.Errorf("OpenURL(%q): %v", tc.url, err)
			continue
		}
		d := l.(*redlock.Driver)
		if len(d.Nodes()) != tc.nodes || d.Quorum() != tc.nodes/2+1 || d.Nodes()[0].Prefix() != tc.prefix {
			t.Errorf("OpenURL(%q): %d nodes, quorum %d, prefix %q; want %d, %d, %q", tc.url, len(d.Nodes()), d.Quorum(), d.Nodes()[0].Prefix(), tc.nodes, tc.nodes/2+1, tc.prefix)
		}
		_ = l.Close()
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
		return drivertest.OpenURL(ctx, t, o, raw).(*redlock.Driver)
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
