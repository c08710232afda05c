package etcddlock

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
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

func TestOpenURL(t *testing.T) {
	ok := []struct {
		url       string
		endpoints []string
		prefix    string
		raw       bool
		timeout   time.Duration
	}{
		{"etcd://127.0.0.1:1", []string{"127.0.0.1:1"}, DefaultPrefix, false, DefaultRequestTimeout},
		{"etcd://127.0.0.1:1,127.0.0.1:2/", []string{"127.0.0.1:1", "127.0.0.1:2"}, DefaultPrefix, false, DefaultRequestTimeout},
		{"etcd://localhost?prefix=", []string{"localhost:2379"}, "", true, DefaultRequestTimeout},
		{"etcd://[::1]:2379?prefix=/app/locks/&request-timeout=2s&dial-timeout=1", []string{"[::1]:2379"}, "/app/locks/", false, 2 * time.Second},
		{"ETCD://h1,h2:1?request-timeout=250ms", []string{"h1:2379", "h2:1"}, DefaultPrefix, false, 250 * time.Millisecond},
	}
	for _, tc := range ok {
		d, err := openDriver(t.Context(), tc.url)
		if err != nil {
			t.Errorf("OpenURL(%q): %v", tc.url, err)
			continue
		}
		ed := d.(*etcdDriver)
		if got := ed.cli.Endpoints(); !slices.Equal(got, tc.endpoints) {
			t.Errorf("%q: endpoints = %q, want %q", tc.url, got, tc.endpoints)
		}
		if ed.prefix != tc.prefix || ed.raw != tc.raw || ed.reqTimeout != tc.timeout {
			t.Errorf("%q: prefix %q raw %v timeout %v, want %q %v %v", tc.url, ed.prefix, ed.raw, ed.reqTimeout, tc.prefix, tc.raw, tc.timeout)
		}
		_ = d.Close()
	}

	bad := []string{
		"etcd://",
		"etcd://127.0.0.1:1?bogus=1",
		"etcd://127.0.0.1:1/some/path",
		"etcd://127.0.0.1:1,,127.0.0.1:2",
		"etcd://127.0.0.1:1?dial-timeout=soon",
		"etcd://127.0.0.1:1?request-timeout=0s",
		"etcd://127.0.0.1:1?prefix=a&prefix=b",
		"etcd://127.0.0.1:1?cacert=/ca.pem",
		"etcd://127.0.0.1:1?insecure-skip-tls-verify=true",
		"etcds://127.0.0.1:1?cacert=/nonexistent/ca.pem",
		"etcds://127.0.0.1:1?cert=/c.pem",
		"etcds://127.0.0.1:1?insecure-skip-tls-verify=maybe",
		"etcd://127.0.0.1:1#frag",
	}
	for _, u := range bad {
		d, err := openDriver(t.Context(), u)
		if err == nil {
			_ = d.Close()
			t.Errorf("OpenURL(%q) succeeded, want ErrInvalidOption", u)
			continue
		}
		if !errors.Is(err, driver.ErrInvalidOption) {
			t.Errorf("OpenURL(%q) = %v, want ErrInvalidOption", u, err)
		}
	}
}

// TestURLOpener: a URLOpener's settings reach the driver and the
// clientv3.Config, and a URL parameter wins over the setting it overrides.
func TestURLOpener(t *testing.T) {
	srv := testserver.StartEtcd(t)
	cli := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 30*time.Second)
	var seen clientv3.Config
	o := &URLOpener{
		Options:         Options{Prefix: "/apps/y/", RequestTimeout: 3 * time.Second},
		DialTimeout:     2 * time.Second,
		ConfigureClient: func(cfg *clientv3.Config) { seen = *cfg },
	}
	tests := []struct {
		query            string
		prefix           string
		raw              bool
		timeout, dialing time.Duration
	}{
		{"", "/apps/y/", false, 3 * time.Second, 2 * time.Second},
		{"?prefix=/other/&request-timeout=1s&dial-timeout=4s", "/other/", false, time.Second, 4 * time.Second},
		{"?prefix=", "", true, 3 * time.Second, 2 * time.Second},
	}
	for _, tc := range tests {
		raw := "etcd://" + srv.Addr() + tc.query
		ed := drivertest.OpenURL(ctx, t, o, raw).(*etcdDriver)
		if ed.prefix != tc.prefix || ed.raw != tc.raw || ed.reqTimeout != tc.timeout {
			t.Errorf("%q: prefix %q raw %v request timeout %v, want %q %v %v", raw, ed.prefix, ed.raw, ed.reqTimeout, tc.prefix, tc.raw, tc.timeout)
		}
		if seen.DialTimeout != tc.dialing || !slices.Equal(seen.Endpoints, srv.Endpoints()) {
			t.Errorf("%q: ConfigureClient saw dial timeout %v, endpoints %q; want %v, %q", raw, seen.DialTimeout, seen.Endpoints, tc.dialing, srv.Endpoints())
		}
		c := dlock.NewClient(ed)
		l, err := c.TryLock(ctx, "job")
		if err != nil {
			t.Fatalf("%q: TryLock: %v", raw, err)
		}
		resp, err := cli.Get(ctx, tc.prefix+"job/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 1 {
			t.Errorf("%q: entries under %q: %v, %v; want 1", raw, tc.prefix+"job/", resp, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Error(err)
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}

	// A TLS configuration on a plain-text URL is refused.
	u, err := driver.ParseURL("etcd://" + srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if d, err := (&URLOpener{TLSConfig: &tls.Config{}}).OpenLockerURL(ctx, u); !errors.Is(err, driver.ErrInvalidOption) {
		if err == nil {
			_ = d.Close()
		}
		t.Errorf("etcd:// with a TLSConfig: %v, want ErrInvalidOption", err)
	}
}

func TestNewClient(t *testing.T) {
	if _, err := NewClient(nil, Options{}); !errors.Is(err, driver.ErrInvalidOption) {
		t.Fatalf("NewClient(nil) = %v, want ErrInvalidOption", err)
	}
	srv := testserver.StartEtcd(t)
	cli := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 20*time.Second)
	c, err := NewClient(cli, Options{Prefix: "/apps/x/"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.TryLock(ctx, "job/1")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/apps/x/job%2F1/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("entries under /apps/x/job%%2F1/: %v, %v; want 1", resp, err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// The application's client stays open.
	if _, err := cli.Get(ctx, "x"); err != nil {
		t.Fatalf("application's client after the dlock Client closed: %v", err)
	}
}

func TestAuth(t *testing.T) {
	srv := testserver.StartEtcd(t)
	cli := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 30*time.Second)
	steps := []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth set-up step %d: %v", i, err)
		}
	}
	c := openClient(t, "etcd://root:rootpw@"+srv.Addr())
	l, err := c.TryLock(ctx, "auth")
	if err != nil {
		t.Fatalf("TryLock with a user: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = dlock.Open(ctx, "etcd://root:wrong-pw@"+srv.Addr())
	if err == nil || strings.Contains(err.Error(), "wrong-pw") || !strings.Contains(err.Error(), srv.Addr()) {
		t.Fatalf("Open with a wrong password = %v; want an error naming %s, without the password", err, srv.Addr())
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	files := writeTestPKI(t, dir)
	srv := testserver.StartEtcd(t, testserver.WithEtcdTLS(testserver.EtcdTLS{
		CertFile: files["server.pem"], KeyFile: files["server-key.pem"], CAFile: files["ca.pem"],
		ClientCertAuth: true, ClientCertFile: files["client.pem"], ClientKeyFile: files["client-key.pem"],
	}))
	ctx := testCtx(t, 30*time.Second)
	url := "etcds://" + srv.Addr() + "?cacert=" + files["ca.pem"] + "&cert=" + files["client.pem"] + "&key=" + files["client-key.pem"]
	c := openClient(t, url)
	l, err := c.TryLock(ctx, "tls")
	if err != nil {
		t.Fatalf("TryLock over TLS with a client certificate: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// The same from a URLOpener's TLSConfig: the client certificate in
	// memory, and roots that trust nothing, which the URL's cacert replaces.
	cert, err := tls.LoadX509KeyPair(files["client.pem"], files["client-key.pem"])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	o := &URLOpener{TLSConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}
	for _, tc := range []struct {
		query string
		ok    bool
	}{{"", false}, {"?cacert=" + files["ca.pem"], true}} {
		d := drivertest.OpenURL(ctx, t, o, "etcds://"+srv.Addr()+tc.query)
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = d.Inspect(tctx, "tls")
		cancel()
		if tc.ok && err != nil {
			t.Errorf("Inspect over TLS from the TLSConfig and %q: %v", tc.query, err)
		}
		if !tc.ok && !errors.Is(err, dlock.ErrUnavailable) {
			t.Errorf("Inspect with roots that trust nothing = %v, want ErrUnavailable", err)
		}
		if o.TLSConfig.RootCAs != roots {
			t.Errorf("the URLOpener's TLSConfig was changed")
		}
		_ = d.Close()
	}

	// Without a client certificate the server refuses the connection.
	c = openClient(t, "etcds://"+srv.Addr()+"?cacert="+files["ca.pem"])
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := c.TryLock(tctx, "tls"); !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("TryLock without a client certificate = %v, want ErrUnavailable", err)
	}
}

// writeTestPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all PEM, and returns their paths by file name.
func writeTestPKI(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	write := func(name, typ string, der []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = p
	}
	newKey := func(name string) *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(name, "EC PRIVATE KEY", der)
		return k
	}
	now := time.Now()
	caKey := newKey("ca-key.pem")
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dlock test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.pem", "CERTIFICATE", caDER)
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) {
		k := newKey(name + "-key.pem")
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".pem", "CERTIFICATE", der)
	}
	leaf("server", 2, x509.ExtKeyUsageServerAuth)
	leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return files
}
