package redisdlock_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

func TestSchemesRegistered(t *testing.T) {
	for _, s := range []string{"redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"} {
		if !slices.Contains(dlock.Schemes(), s) {
			t.Errorf("scheme %q not registered; have %v", s, dlock.Schemes())
		}
	}
}

// TestOpenURL opens URLs without contacting a server (Open is lazy) and
// checks the options they produce.
func TestOpenURL(t *testing.T) {
	ca := writeTestCA(t)
	tests := []struct {
		url    string
		prefix string
	}{
		{"redis://127.0.0.1:1", ""},
		{"redis://localhost", ""},
		{"redis://127.0.0.1:1?prefix=dlock:", "dlock:"},
		{"redis://u:p@127.0.0.1:1/2?prefix=app:", "app:"},
		{"redis://127.0.0.1:1/?prefix=", ""},
		{"redis://127.0.0.1:1?prefix=%7Bapp%7D:", "{app}:"},
		{"redis://[::1]:6379/0", ""},
		{"redis://127.0.0.1:1?dial_timeout=1s&read_timeout=250ms&write_timeout=2&pool_size=3&fence_ttl=48h", ""},
		{"rediss://127.0.0.1:1?tls_ca_file=" + ca + "&tls_server_name=redis.example&tls_insecure_skip_verify=false", ""},
		{"redis+cluster://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3?prefix=c:", "c:"},
		{"redis+cluster://127.0.0.1:1/", ""},
		{"rediss+cluster://127.0.0.1:1,127.0.0.1:2?tls_insecure_skip_verify=1", ""},
		{"redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster", ""},
		{"redis+sentinel://:pw@127.0.0.1/mymaster/3?sentinel_password=spw&sentinel_username=su", ""},
		{"rediss+sentinel://127.0.0.1:1/mymaster?tls_ca_file=" + ca, ""},
	}
	for _, tc := range tests {
		u, err := driver.ParseURL(tc.url)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", tc.url, err)
		}
		l, err := redisdlock.OpenURL(context.Background(), u)
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

func TestOpenURLInvalid(t *testing.T) {
	const pw = "pa55word-in-url"
	tests := []string{
		"redis://127.0.0.1:1?unknown=1",
		"redis://127.0.0.1:1?prefix=a&prefix=b",
		"redis://127.0.0.1:1?dial_timeout=soon",
		"redis://127.0.0.1:1?read_timeout=0",
		"redis://127.0.0.1:1?write_timeout=-1s",
		"redis://127.0.0.1:1?pool_size=0",
		"redis://127.0.0.1:1?pool_size=many",
		"redis://127.0.0.1:1?fence_ttl=1ms",
		"redis://127.0.0.1:1?prefix=%7B",
		"redis://127.0.0.1:1?prefix=%7B%7D",
		"redis://127.0.0.1:1?prefix=%FF",
		"redis://127.0.0.1:1/x",
		"redis://127.0.0.1:1/-1",
		"redis://127.0.0.1:1/1/2",
		"redis://127.0.0.1:99999",
		"redis://127.0.0.1:1,127.0.0.1:2",
		"redis://127.0.0.1:1?tls_ca_file=/x",
		"redis://127.0.0.1:1?tls_insecure_skip_verify=true",
		"redis://127.0.0.1:1?sentinel_password=x",
		"rediss://127.0.0.1:1?tls_ca_file=/does/not/exist",
		"rediss://127.0.0.1:1?tls_cert_file=/x",
		"rediss://127.0.0.1:1?tls_insecure_skip_verify=maybe",
		"redis+cluster://127.0.0.1:1/0",
		"redis+cluster://127.0.0.1:1,,127.0.0.1:2",
		"redis+cluster://127.0.0.1:1?sentinel_username=x",
		"redis+sentinel://127.0.0.1:1",
		"redis+sentinel://127.0.0.1:1/",
		"redis+sentinel://127.0.0.1:1/m/x",
		"redis+sentinel://127.0.0.1:1/m/1/2",
		"redis+sentinel://:" + pw + "@127.0.0.1:1/m?bogus=1",
		"redis://:" + pw + "@127.0.0.1:1?bogus=1",
		"redis://:" + pw + "@127.0.0.1:1/nodb",
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

// TestOpenURLNeedsHost: a URL without a host, or without the "//" that
// introduces one, is an error naming the scheme and what is missing, not a
// client of localhost:6379.
func TestOpenURLNeedsHost(t *testing.T) {
	const pw = "pa55word-in-url"
	tests := []struct{ url, want string }{
		{"redis:127.0.0.1:1", `redis URL is missing the "//"`},
		{"redis:app:" + pw + "@127.0.0.1:1/0", `redis URL is missing the "//"`},
		{"redis:/app:" + pw + "@127.0.0.1:1/0", `redis URL is missing the "//"`},
		{"rediss:127.0.0.1:1", `rediss URL is missing the "//"`},
		{"redis+cluster:127.0.0.1:1", `redis+cluster URL is missing the "//"`},
		{"redis+sentinel:/m", `redis+sentinel URL is missing the "//"`},
		{"redis://", "redis URL names no host"},
		{"redis:///0", "redis URL names no host"},
		{"redis://:" + pw + "@/0", "redis URL names no host"},
		{"rediss://?tls_insecure_skip_verify=true", "rediss URL names no host"},
		{"redis+cluster://", "redis+cluster URL names no host"},
		{"rediss+cluster:///", "rediss+cluster URL names no host"},
		{"redis+sentinel:///mymaster", "redis+sentinel URL names no host"},
		{"rediss+sentinel://:" + pw + "@/mymaster", "rediss+sentinel URL names no host"},
		{"redis://%2Ftmp%2Fredis.sock/0", "not valid"},
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

// writeTestCA writes a throw-away self-signed CA certificate and returns
// its path.
func writeTestCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
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
		u, err := driver.ParseURL(raw)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", raw, err)
		}
		l, err := o.OpenLockerURL(ctx, u)
		if err != nil {
			t.Fatalf("OpenLockerURL(%q): %v", raw, err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l.(*redisengine.Engine)
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
