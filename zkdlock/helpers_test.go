package zkdlock

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// startStandalone starts a ZooKeeper server for one top-level test.
func startStandalone(t *testing.T) *testserver.ZooKeeper {
	t.Helper()
	return testserver.StartZooKeeper(t, testserver.ZooKeeperConfig{})
}

// openDriver opens a driver from a URL, closed when the test ends.
func openDriver(t testing.TB, rawURL string) *zkDriver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u, err := driver.ParseURL(rawURL)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", rawURL, err)
	}
	l, err := OpenURL(ctx, u)
	if err != nil {
		t.Fatalf("open %s: %v", u.Redacted(), err)
	}
	d := l.(*zkDriver)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// openClient opens a dlock Client from a URL, closed when the test ends.
func openClient(t testing.TB, rawURL string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dlock.Open(ctx, rawURL, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// connect opens a plain go-zookeeper connection and waits for its session.
// dialer may be nil.
func connect(t testing.TB, addrs []string, sessionTimeout time.Duration, dialer zk.Dialer) *zk.Conn {
	t.Helper()
	up := make(chan struct{}, 1)
	if dialer == nil {
		dialer = net.DialTimeout
	}
	conn, _, err := zk.Connect(addrs, sessionTimeout, zk.WithDialer(dialer), zk.WithLogger(discardLogger{}),
		zk.WithEventCallback(func(ev zk.Event) {
			if ev.Type == zk.EventSession && ev.State == zk.StateHasSession {
				select {
				case up <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatalf("zk.Connect: %v", err)
	}
	t.Cleanup(conn.Close)
	select {
	case <-up:
	case <-time.After(20 * time.Second):
		t.Fatalf("no ZooKeeper session with %v after 20s", addrs)
	}
	return conn
}

// within runs fn and fails the test if it does not return within d.
func within(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v", what, d)
	}
}
