//go:build unix

package cli

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock/internal/testserver"
)

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// hungBackends starts real servers behind blackholed proxies: they accept
// connections and never answer. They are the URLs of those proxies.
func hungBackends(t *testing.T) []struct{ name, url string } {
	t.Helper()
	rd := testserver.StartRedis(t)
	et := testserver.StartEtcd(t)
	pg := testserver.StartPostgres(t)
	var out []struct{ name, url string }
	for _, s := range []struct{ name, scheme, addr, rest string }{
		{"redis", "redis", rd.Addr(), ""},
		{"etcd", "etcd", et.Endpoints()[0], ""},
		{"postgres", "postgres", pg.Addr(), "/" + pg.Database + "?sslmode=disable"},
	} {
		p := testserver.StartProxy(t, s.addr)
		p.Blackhole(true)
		out = append(out, struct{ name, url string }{s.name, s.scheme + "://" + p.Addr() + s.rest})
	}
	return out
}

// A backend that is down or hung is not contention: dlock run exits 69
// with the backend's error (75 is for a lock held by another owner), and
// within what --wait says, connecting included, even when the connect
// timeout is longer.
func TestRunDeadBackend(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	type backend struct{ name, url string }
	var backends []backend
	for _, s := range []struct{ scheme, rest string }{
		{"etcd", ""}, {"zk", ""}, {"postgres", "/x"}, {"mysql", "/x"}, {"redis", ""},
	} {
		backends = append(backends, backend{"refused " + s.scheme, s.scheme + "://" + closedAddr(t) + s.rest})
	}
	for _, h := range hungBackends(t) {
		backends = append(backends, backend{"hung " + h.name, h.url})
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{
				{"run", "--wait", "1s", "--backend", b.url, "k", "--", "true"},
				{"run", "--try", "--connect-timeout", "1s", "--backend", b.url, "k", "--", "true"},
				{"status", "--connect-timeout", "1s", "--backend", b.url, "k"},
			} {
				r := e.run(30*time.Second, args...)
				t.Logf("dlock %s: exit %d after %v", args[0], r.code, r.took.Round(time.Millisecond))
				if r.code != ExitUnavailable {
					t.Errorf("dlock %q: got exit %d, want %d (stderr %q)", args, r.code, ExitUnavailable, r.stderr)
				}
				if got := lines(r.stderr); len(got) != 1 || strings.Contains(got[0], "held") {
					t.Errorf("dlock %q: stderr %q, want one line with the backend's error, not \"held\"", args, r.stderr)
				}
				// A correctness deadline, not a benchmark: the flags allow
				// 1s; the 10s connect timeout must not apply.
				if r.took > 7*time.Second {
					t.Errorf("dlock %q took %v, want about the 1s the flags allow", args, r.took)
				}
			}
		})
	}
}

// Real contention on a live server still exits with the conflict code, and
// a backend that answers is not taken for a dead one.
func TestRunContentionOnServer(t *testing.T) {
	t.Parallel()
	rd := testserver.StartRedis(t)
	et := testserver.StartEtcd(t)
	for _, b := range []struct{ name, url string }{
		{"redis", rd.URL()},
		{"etcd", "etcd://" + et.Endpoints()[0]},
	} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t).with(EnvBackend + "=" + b.url)
			ready := e.path("ready")
			_, _ = e.start(60*time.Second, "run", "job", "--", "sh", "-c", `echo up > "$0"; sleep 30`, ready)
			e.waitForFile(ready, 20*time.Second)
			r := e.run(30*time.Second, "run", "--wait", "1s", "job", "--", "true")
			if r.code != ExitNotAcquired || !strings.Contains(r.stderr, "cmd=sh") {
				t.Errorf("waiter: got exit %d, stderr %q; want %d naming the holder (cmd=sh)", r.code, r.stderr, ExitNotAcquired)
			}
			r = e.run(30*time.Second, "status", "job")
			if r.code != 0 || !strings.Contains(r.stdout, "state:   held") {
				t.Errorf("status: got exit %d, stdout %q, stderr %q; want 0 and held", r.code, r.stdout, r.stderr)
			}
		})
	}
}
