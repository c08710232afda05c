package redisdlock_test

import (
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/redisengine"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestURLs: drivertest.RunURLTests with this package's schemes (the
// refusals every Redis URL shares are redistest.InvalidURLs'), then forms
// of a Cluster, Sentinels and addresses where nothing listens, opened
// without contacting them (opening is lazy), with the key prefix each
// gives the driver.
func TestURLs(t *testing.T) {
	srv, tlsSrv := testserver.StartRedis(t), testserver.StartRedis(t, testserver.RedisTLS())
	ca := "tls_ca_file=" + tlsSrv.CAFile
	drivertest.RunURLTests(t, drivertest.URLCases{
		Secret: redistest.Secret,
		Valid: []string{
			srv.URL(),
			srv.URL() + "/2?prefix=app:",
			srv.URL() + "?dial_timeout=1s&read_timeout=250ms&write_timeout=2&pool_size=3&fence_ttl=48h",
			tlsSrv.URL() + "?" + ca + "&tls_server_name=127.0.0.1&tls_insecure_skip_verify=false",
			tlsSrv.URL() + "/1?tls_insecure_skip_verify=1",
		},
		Invalid: append(redistest.InvalidURLs(redisdlock.Scheme, redisdlock.SchemeTLS, redisdlock.SchemeCluster,
			redisdlock.SchemeClusterTLS, redisdlock.SchemeSentinel, redisdlock.SchemeSentinelTLS), []drivertest.InvalidURL{
			{URL: "redis://127.0.0.1:1,127.0.0.1:2", Want: "names 2 hosts"},
			{URL: "redis+cluster://127.0.0.1:1/0", Want: "takes no path"},
			{URL: "redis+cluster://127.0.0.1:1?sentinel_username=x", Want: "sentinel_username"},
			{URL: "redis+sentinel://127.0.0.1:1", Want: "master name"},
			{URL: "redis+sentinel://127.0.0.1:1/", Want: "master name"},
			{URL: "redis+sentinel://127.0.0.1:1/m/1/2", Want: "master name"},
			{URL: "redis+sentinel://127.0.0.1:1/m/x", Want: "database number"},
			{URL: "redis+sentinel://:" + redistest.Secret + "@127.0.0.1:1/m?bogus=1", Want: "bogus"},
		}...),
	})
	for _, tc := range []struct{ url, prefix string }{
		{"redis://localhost", ""},
		{"redis://[::1]:6379/0?prefix=", ""},
		{"redis://127.0.0.1:1?prefix=%7Bapp%7D:", "{app}:"},
		{"redis+cluster://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?prefix=c:", "c:"},
		{"redis+cluster://127.0.0.1:1/", ""},
		{"rediss+cluster://127.0.0.1:1,127.0.0.1:2?tls_insecure_skip_verify=1", ""},
		{"redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster", ""},
		{"redis+sentinel://:pw@127.0.0.1/mymaster/3?sentinel_password=spw&sentinel_username=su", ""},
		{"rediss+sentinel://127.0.0.1:1/mymaster?" + ca, ""},
	} {
		u, err := driver.ParseURL(tc.url)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", tc.url, err)
		}
		l, err := redisdlock.OpenURL(t.Context(), u)
		if err != nil {
			t.Errorf("OpenURL(%q): %v", tc.url, err)
			continue
		}
		if got := l.(*redisengine.Engine).Prefix(); got != tc.prefix {
			t.Errorf("OpenURL(%q): prefix %q, want %q", tc.url, got, tc.prefix)
		}
		_ = l.Close()
	}
}

func TestNewDriverOptions(t *testing.T) {
	tests := []struct {
		name string
		o    redisdlock.Options
		ok   bool
		want string
	}{
		{"zero", redisdlock.Options{}, true, ""},
		{"prefix", redisdlock.Options{Prefix: "app:"}, true, "app:"},
		{"braced prefix", redisdlock.Options{Prefix: "{app}:"}, true, "{app}:"},
		{"bad tag", redisdlock.Options{Prefix: "a{"}, false, ""},
		{"short fence TTL", redisdlock.Options{FenceTTL: 1}, false, ""},
	}
	for _, tc := range tests {
		d, err := redisdlock.NewDriver(rawClient(t, "127.0.0.1:1"), tc.o)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: NewDriver = %v", tc.name, err)
		case tc.ok && d.(*redisengine.Engine).Prefix() != tc.want:
			t.Errorf("%s: prefix %q, want %q", tc.name, d.(*redisengine.Engine).Prefix(), tc.want)
		case !tc.ok && !errors.Is(err, dlock.ErrInvalidOption):
			t.Errorf("%s: NewDriver = %v, want ErrInvalidOption", tc.name, err)
		}
	}
	if _, err := redisdlock.NewDriver(nil, redisdlock.Options{}); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("NewDriver(nil) = %v, want ErrInvalidOption", err)
	}
}

// TestURLOpener: a configured URLOpener's Options, TLSConfig and
// ClientOptions reach the driver; the URL's parameters override the
// Options and TLSConfig defaults, and the hook has the last word.
func TestURLOpener(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	var seen []redis.UniversalOptions
	codeTLS := &tls.Config{ServerName: "code.example"}
	o := &redisdlock.URLOpener{
		Options:   redisdlock.Options{Prefix: "code:", FenceTTL: 2 * time.Hour, Addr: "the-cache"},
		TLSConfig: codeTLS,
		ClientOptions: func(ro *redis.UniversalOptions) {
			seen = append(seen, *ro)
			ro.ClientName = "from-code"
		},
	}
	open := func(raw string) *redisengine.Engine {
		t.Helper()
		return drivertest.OpenURL(ctx, t, o, raw).(*redisengine.Engine)
	}

	d := open(srv.URL())
	if got := d.Prefix(); got != "code:" {
		t.Errorf("prefix %q, want the Options default %q", got, "code:")
	}
	if res, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	_, fence, _ := d.Keys("k")
	if ttl := rawClient(t, srv.Addr()).PTTL(ctx, fence).Val(); ttl <= time.Hour || ttl > 2*time.Hour {
		t.Errorf("fence counter PTTL %v, want Options.FenceTTL (2h)", ttl)
	}
	if name, err := rawClient(t, srv.Addr()).ClientList(ctx).Result(); err != nil || !strings.Contains(name, "name=from-code") {
		t.Errorf("CLIENT LIST = %q, %v; want a connection named by the hook", name, err)
	}
	if got := open(srv.URL() + "?prefix=url:").Prefix(); got != "url:" {
		t.Errorf("prefix %q, want the URL's %q", got, "url:")
	}

	// Addr names the server in errors; the hook sees the URL's address
	// and database.
	down := open("redis://127.0.0.1:1/3")
	if _, err := down.Inspect(ctx, "k"); err == nil || !strings.Contains(err.Error(), "the-cache") {
		t.Errorf("Inspect on a closed port = %v, want an error naming Options.Addr", err)
	}
	if last := seen[len(seen)-1]; !slices.Equal(last.Addrs, []string{"127.0.0.1:1"}) || last.DB != 3 || !last.ContextTimeoutEnabled || last.MaxRetries != -1 {
		t.Errorf("ClientOptions saw %+v, want the URL's address and DB, context deadlines, no retries", last)
	}

	// TLS: the configuration from code, cloned, with the URL's tls_*
	// parameters on top; not used without TLS.
	open("rediss://127.0.0.1:1")
	if got := seen[len(seen)-1].TLSConfig; got == nil || got == codeTLS || got.ServerName != "code.example" {
		t.Errorf("TLS config %+v, want a clone of the opener's", got)
	}
	open("rediss://127.0.0.1:1?tls_server_name=url.example")
	if got := seen[len(seen)-1].TLSConfig; got == nil || got.ServerName != "url.example" || codeTLS.ServerName != "code.example" {
		t.Errorf("TLS server name %q (opener's %q), want the URL's, the opener's unchanged", got.ServerName, codeTLS.ServerName)
	}
	open("redis://127.0.0.1:1")
	if got := seen[len(seen)-1].TLSConfig; got != nil {
		t.Errorf("TLS config on redis:// = %+v, want none", got)
	}
}
