package zkdlock

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestURLs: the suite's URL checks, with ZooKeeper's invalid forms.
func TestURLs(t *testing.T) {
	z := startStandalone(t)
	const bad = "zk://127.0.0.1:1/locks"
	drivertest.RunURLTests(t, drivertest.URLCases{
		Secret: "s3cret",
		Valid:  []string{"zk://" + z.Addr() + "/urls", "zk://" + z.Addr() + "/urls?session_timeout=3s&acl=world"},
		Invalid: []drivertest.InvalidURL{
			{URL: bad + "?bogus=1", Want: "bogus"},
			{URL: bad + "?acl=everyone", Want: "acl"},
			{URL: bad + "?acl=creator", Want: "acl"},
			{URL: bad + "?acl=creator-read", Want: "acl"},
			{URL: bad + "?session_timeout=soon", Want: "session_timeout"},
			{URL: bad + "?session_timeout=0", Want: "session_timeout"},
			{URL: bad + "?connect_timeout=-1s", Want: "connect_timeout"},
			{URL: bad + "?session_timeout=1s&session_timeout=2s", Want: "session_timeout"},
			{URL: "zk:///locks", Want: "no host"},
			{URL: "zk://127.0.0.1:1,,127.0.0.1:2/locks", Want: "empty host"},
			{URL: "zk://127.0.0.1:1/a//b", Want: "empty"},
			{URL: "zk://127.0.0.1:1/a/../b", Want: `".."`},
			{URL: "zk://127.0.0.1:1/zookeeper/quota", Want: "reserved"},
			{URL: "zk://alice@127.0.0.1:1/locks", Want: "user:password"},
			{URL: "zk://alice:s3cret@127.0.0.1:1/locks?acl=nobody", Want: "acl"},
			{URL: bad + "#frag", Want: "must look like"},
		},
		Backend:     "zookeeper",
		Unreachable: func(addr string) string { return "zk://alice:s3cret@" + addr + "/locks" },
	})
}

func TestNewDriverInvalid(t *testing.T) {
	z := startStandalone(t)
	conn := connect(t, z.Addrs(), 5*time.Second, nil)
	tests := []struct {
		name string
		conn *zk.Conn
		o    Options
	}{
		{"nil conn", nil, Options{SessionTimeout: time.Second}},
		{"no session timeout", conn, Options{}},
		{"relative base", conn, Options{Base: "locks", SessionTimeout: time.Second}},
	}
	for _, tc := range tests {
		if _, err := NewClient(tc.conn, tc.o); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("%s: NewClient = %v, want ErrInvalidOption", tc.name, err)
		}
	}
}

// TestOpenUnreachable: Open gives up within the caller's deadline with an
// error matching ErrUnavailable and the deadline (TestURLs checks what it
// names), or at connect_timeout.
func TestOpenUnreachable(t *testing.T) {
	addr := testserver.Addr(testserver.FreePort(t)) // nothing listens there
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := dlock.Open(ctx, "zk://"+addr+"/locks"); !errors.Is(err, dlock.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open = %v, want ErrUnavailable and context.DeadlineExceeded", err)
	}
	start := time.Now()
	_, err := dlock.Open(t.Context(), "zk://"+addr+"/locks?connect_timeout=300ms")
	if !errors.Is(err, dlock.ErrUnavailable) || time.Since(start) > 1500*time.Millisecond {
		t.Errorf("Open with connect_timeout=300ms = %v after %v, want ErrUnavailable soon", err, time.Since(start))
	}
}

// TestSessionTimeoutBoundsTTL: the driver learns the session timeout the
// server grants and accepts TTLs up to it, no more.
func TestSessionTimeoutBoundsTTL(t *testing.T) {
	z := testserver.StartZooKeeper(t, testserver.ZooKeeperConfig{MaxSessionTimeout: 20 * time.Second})
	tests := []struct {
		ask, granted time.Duration
	}{
		{time.Second, time.Second},
		{5 * time.Second, 5 * time.Second},
		{90 * time.Second, 20 * time.Second}, // clamped by maxSessionTimeout
		{100 * time.Millisecond, 400 * time.Millisecond},
	}
	for _, tc := range tests {
		d := openDriver(t, "zk://"+z.Addr()+"/ttl?session_timeout="+tc.ask.String())
		if got := d.Capabilities().MaxTTL; got != tc.granted {
			t.Errorf("session_timeout=%v: MaxTTL = %v, want the granted %v", tc.ask, got, tc.granted)
		}
		c := dlock.NewClient(d)
		if _, err := c.TryLock(t.Context(), "k", dlock.WithTTL(tc.granted+time.Millisecond)); !errors.Is(err, dlock.ErrInvalidTTL) {
			t.Errorf("session %v: TryLock with a longer TTL = %v, want ErrInvalidTTL", tc.granted, err)
		}
		l, err := c.TryLock(t.Context(), "k", dlock.WithTTL(tc.granted))
		if err != nil {
			t.Errorf("session %v: TryLock with TTL = session timeout: %v", tc.granted, err)
			continue
		}
		if err := l.Refresh(t.Context(), tc.granted+time.Second); !errors.Is(err, dlock.ErrInvalidTTL) {
			t.Errorf("session %v: Refresh with a longer TTL = %v, want ErrInvalidTTL", tc.granted, err)
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Errorf("Unlock: %v", err)
		}
	}
}

// TestDigestACL: with acl=creator only the URL's digest identity may touch
// the nodes; with creator-read anyone may read them (Inspect) but not
// delete them.
func TestDigestACL(t *testing.T) {
	z := startStandalone(t)
	for _, acl := range []string{"creator", "creator-read"} {
		t.Run(acl, func(t *testing.T) {
			base := "/acl-" + acl
			alice := openClient(t, "zk://alice:s3cret@"+z.Addr()+base+"?acl="+acl, dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
			l, err := alice.TryLock(t.Context(), "k", dlock.WithMetadata("alice"))
			if err != nil {
				t.Fatalf("TryLock with digest credentials: %v", err)
			}
			// Someone without the credentials.
			anon := connect(t, z.Addrs(), 5*time.Second, nil)
			kids, _, err := anon.Children(Path(base, "k"))
			wantRead := acl == "creator-read"
			if wantRead != (err == nil) {
				t.Errorf("listing the key node without credentials: err = %v, want readable %v", err, wantRead)
			}
			if wantRead {
				for _, k := range kids {
					if err := anon.Delete(Path(base, "k")+"/"+k, -1); !errors.Is(err, zk.ErrNoAuth) {
						t.Errorf("deleting the lock node without credentials = %v, want zk.ErrNoAuth", err)
					}
				}
			}
			// Another identity cannot queue there either: a clear error, not
			// ErrUnavailable.
			mallory := openClient(t, "zk://mallory:guess@"+z.Addr()+base)
			if _, err := mallory.TryLock(t.Context(), "k2"); err == nil || errors.Is(err, dlock.ErrUnavailable) || !errors.Is(err, zk.ErrNoAuth) {
				t.Errorf("TryLock by another identity = %v, want an error matching zk.ErrNoAuth", err)
			}
			if in, err := alice.Inspect(t.Context(), "k"); err != nil || !in.Held || in.Metadata != "alice" {
				t.Errorf("Inspect by the owner = %+v, %v; want held by alice", in, err)
			}
			if err := l.Unlock(t.Context()); err != nil {
				t.Errorf("Unlock: %v", err)
			}
		})
	}
}

// TestURLOpener: a URLOpener's settings reach the driver and the
// connection, and the URL's path and parameters win over the settings they
// override.
func TestURLOpener(t *testing.T) {
	z := startStandalone(t)
	conn := connect(t, z.Addrs(), 10*time.Second, nil)
	var dials, configured atomic.Int64
	noAdmin := zk.WorldACL(zk.PermRead | zk.PermCreate | zk.PermDelete | zk.PermWrite)
	o := &URLOpener{
		Options:        Options{Base: "/opener", SessionTimeout: 2 * time.Second, ACL: noAdmin},
		ConnectTimeout: 10 * time.Second,
		Dialer: func(network, addr string, timeout time.Duration) (net.Conn, error) {
			dials.Add(1)
			return net.DialTimeout(network, addr, timeout)
		},
		ConnOptions: []func(*zk.Conn){zk.WithMaxBufferSize(1 << 20), func(*zk.Conn) { configured.Add(1) }},
	}
	tests := []struct {
		rest    string
		base    string
		session time.Duration
		acl     []zk.ACL
	}{
		{"", "/opener", 2 * time.Second, noAdmin},
		{"/other?session_timeout=3s&acl=world", "/other", 3 * time.Second, zk.WorldACL(zk.PermAll)},
	}
	for _, tc := range tests {
		raw := "zk://" + z.Addr() + tc.rest
		dials.Store(0)
		configured.Store(0)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		d := drivertest.OpenURL(ctx, t, o, raw).(*zkDriver)
		if d.base != tc.base || d.Capabilities().MaxTTL != tc.session || !slices.Equal(d.acl, tc.acl) {
			t.Errorf("%q: base %q, MaxTTL %v, ACL %v; want %q, %v, %v", raw, d.base, d.Capabilities().MaxTTL, d.acl, tc.base, tc.session, tc.acl)
		}
		if dials.Load() == 0 || configured.Load() != 1 {
			t.Errorf("%q: %d dials through the Dialer, ConnOptions applied %d times; want some, once", raw, dials.Load(), configured.Load())
		}
		c := dlock.NewClient(d)
		lk, err := c.TryLock(ctx, "k")
		if err != nil {
			t.Fatalf("%q: TryLock: %v", raw, err)
		}
		if kids, _, err := conn.Children(Path(tc.base, "k")); err != nil || len(kids) != 1 {
			t.Errorf("%q: lock nodes under %s: %q, %v; want one", raw, Path(tc.base, "k"), kids, err)
		}
		if err := lk.Unlock(ctx); err != nil {
			t.Error(err)
		}
		_ = c.Close()
		cancel()
	}
}
