package zkdlock

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// faultDialer wraps the connections of a real go-zookeeper client: it can
// cut them and refuse new ones (a partition), or cut a connection right
// after a create request went out, so that the reply is lost.
type faultDialer struct {
	mu          sync.Mutex
	down        bool
	conns       map[*faultConn]struct{}
	cutOnCreate atomic.Int32 // cut after this many more create requests
	cutOnList   atomic.Int32 // cut after this many more children requests
	cuts        atomic.Int32
}

func (f *faultDialer) Dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errors.New("partitioned")
	}
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	if f.conns == nil {
		f.conns = map[*faultConn]struct{}{}
	}
	fc := &faultConn{Conn: c, f: f}
	f.conns[fc] = struct{}{}
	return fc, nil
}

// Partition cuts every connection and refuses new ones until Heal.
func (f *faultDialer) Partition() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = true
	for c := range f.conns {
		_ = c.Conn.Close()
	}
	clear(f.conns)
}

func (f *faultDialer) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = false
}

type faultConn struct {
	net.Conn
	f *faultDialer
}

// Opcodes of ZooKeeper requests that create nodes (create, multi), and of
// the listing of a node's children that go-zookeeper sends.
const opCreate, opMulti, opGetChildren2 = 1, 14, 12

func (c *faultConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	// A request is [length][xid][opcode]... in one Write.
	if err == nil && len(p) >= 12 {
		op := int32(binary.BigEndian.Uint32(p[8:12]))
		if (op == opCreate || op == opMulti) && c.f.cutOnCreate.Load() > 0 && c.f.cutOnCreate.Add(-1) == 0 {
			c.f.cuts.Add(1)
			_ = c.Conn.Close() // the server has the request; its reply is lost
		}
		if op == opGetChildren2 && c.f.cutOnList.Load() > 0 && c.f.cutOnList.Add(-1) == 0 {
			c.f.cuts.Add(1)
			_ = c.Conn.Close()
		}
	}
	return n, err
}

// TestProtectedCreate: a connection loss right after a create request does
// not leave an orphan node: the driver finds its node by its guid.
func TestProtectedCreate(t *testing.T) {
	z := startStandalone(t)
	const base = "/protected"
	fd := &faultDialer{}
	conn := connect(t, z.Addrs(), 5*time.Second, fd.Dial)
	c, err := NewClient(conn, Options{Base: base, SessionTimeout: 5 * time.Second}, dlock.WithLockDefaults(dlock.WithTTL(5*time.Second)))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	other := openClient(t, "zk://"+z.Addr()+base)
	observer := connect(t, z.Addrs(), 5*time.Second, nil)
	nodes := func(key string) []string {
		kids, _, err := observer.Children(Path(base, key))
		if err != nil {
			return nil
		}
		return kids
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// A TryLock whose create reply is lost; and one whose search for its
	// node after that meets a failing connection too (as when go-zookeeper
	// fails it while tearing the first one down): the search is tried
	// again. Each finds its one node.
	for _, tc := range []struct {
		what     string
		listCuts int32
	}{{"a lost create reply", 0}, {"a lost create reply and a lost search", 1}} {
		fd.cuts.Store(0)
		fd.cutOnCreate.Store(1)
		fd.cutOnList.Store(tc.listCuts)
		l, err := c.TryLock(ctx, "k")
		if err != nil {
			t.Fatalf("TryLock through %s: %v", tc.what, err)
		}
		if want := 1 + tc.listCuts; fd.cuts.Load() != want {
			t.Fatalf("connection cuts through %s = %d, want %d", tc.what, fd.cuts.Load(), want)
		}
		if got := nodes("k"); len(got) != 1 {
			t.Fatalf("lock nodes after %s = %v, want exactly one", tc.what, got)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
		if got := nodes("k"); len(got) != 0 {
			t.Fatalf("lock nodes after Unlock = %v, want none", got)
		}
	}

	// A waiter whose create reply is lost queues once, and leaves nothing
	// behind when its ctx ends.
	h, err := other.TryLock(ctx, "q")
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	fd.cuts.Store(0)
	fd.cutOnCreate.Store(1)
	wctx, wcancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Lock(wctx, "q")
		errc <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(nodes("q")) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := nodes("q"); len(got) != 2 || fd.cuts.Load() != 1 {
		t.Fatalf("queue = %v after %d cuts, want the holder and one waiter after 1 cut", got, fd.cuts.Load())
	}
	wcancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter = %v, want context.Canceled", err)
	}
	if got := nodes("q"); len(got) != 1 {
		t.Fatalf("queue after the waiter left = %v, want only the holder", got)
	}
	if err := h.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// TestSessionExpiry: a holder cut off from the server for longer than its
// session timeout loses its lock (Done, ErrLost) no later than another
// client can take the key; once reconnected, it takes new locks with a new
// session.
func TestSessionExpiry(t *testing.T) {
	z := startStandalone(t)
	const base, session = "/expiry", 2 * time.Second
	fd := &faultDialer{}
	conn := connect(t, z.Addrs(), session, fd.Dial)
	c, err := NewClient(conn, Options{Base: base, SessionTimeout: session})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	other := openClient(t, "zk://"+z.Addr()+base)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	l, err := c.TryLock(ctx, "k", dlock.WithTTL(session))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	oldSession := conn.SessionID()
	fd.Partition()
	start := time.Now()
	l2, err := other.Lock(ctx, "k")
	if err != nil {
		t.Fatalf("other client's Lock after the holder's session expired: %v", err)
	}
	t.Logf("other client took the key %v after the partition (session timeout %v)", time.Since(start).Round(time.Millisecond), session)
	select {
	case <-l.Done():
	default:
		t.Fatal("holder's Done still open when another client took the key")
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Fatalf("holder's Err = %v, want ErrLost", err)
	}
	if l2.Fence() <= l.Fence() {
		t.Errorf("new fence %d, want > the expired holder's %d", l2.Fence(), l.Fence())
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}

	fd.Heal()
	// The connection comes back with a new session; new locks work.
	var l3 *dlock.Lock
	for {
		l3, err = c.TryLock(ctx, "k", dlock.WithTTL(session))
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("TryLock after the partition healed: %v", err)
	}
	if conn.SessionID() == oldSession {
		t.Errorf("session id unchanged after expiry")
	}
	if err := l.Unlock(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Unlock of the expired lock = %v, want ErrNotHeld", err)
	}
	if err := l3.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// TestWaiterSessionExpiry: a waiter whose session expires while it waits
// joins the queue again with its new session and still gets the lock: an
// exclusive waiter (AcquireQueued), and a waiting permit, whose share node
// waits in the queue (AcquireSharedQueued).
func TestWaiterSessionExpiry(t *testing.T) {
	z := startStandalone(t)
	const base, session = "/waiter-expiry", 2 * time.Second
	holder := openClient(t, "zk://"+z.Addr()+base)
	take := map[string]func(ctx context.Context, c *dlock.Client, key string, try bool) (*dlock.Lock, error){
		"Lock": func(ctx context.Context, c *dlock.Client, key string, try bool) (*dlock.Lock, error) {
			if try {
				return c.TryLock(ctx, key)
			}
			return c.Lock(ctx, key)
		},
		"Permit": func(ctx context.Context, c *dlock.Client, key string, try bool) (*dlock.Lock, error) {
			if try {
				return c.Semaphore(key, 1).TryAcquire(ctx)
			}
			return c.Semaphore(key, 1).Acquire(ctx)
		},
	}
	for _, name := range []string{"Lock", "Permit"} {
		t.Run(name, func(t *testing.T) {
			take, key := take[name], "k-"+name
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			h, err := take(ctx, holder, key, true)
			if err != nil {
				t.Fatalf("the holder's try: %v", err)
			}
			fd := &faultDialer{}
			conn := connect(t, z.Addrs(), session, fd.Dial)
			c, err := NewClient(conn, Options{Base: base, SessionTimeout: session}, dlock.WithLockDefaults(dlock.WithTTL(session)))
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			t.Cleanup(func() { _ = c.Close() })
			got := make(chan error, 1)
			go func() {
				l, err := take(ctx, c, key, false)
				if err == nil {
					err = l.Unlock(ctx)
				}
				got <- err
			}()
			waiters := func() int {
				in, err := holder.Inspect(ctx, key)
				if err != nil {
					t.Fatalf("Inspect: %v", err)
				}
				return in.Waiters
			}
			for waiters() != 1 && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			oldSession := conn.SessionID()
			fd.Partition()
			for waiters() != 0 && ctx.Err() == nil { // the server expired its session
				time.Sleep(50 * time.Millisecond)
			}
			fd.Heal()
			for waiters() != 1 && ctx.Err() == nil { // back in the queue
				select {
				case err := <-got:
					t.Fatalf("waiter returned after its session expired: %v", err)
				case <-time.After(50 * time.Millisecond):
				}
			}
			if conn.SessionID() == oldSession {
				t.Fatal("waiter kept its session across a partition longer than the session timeout")
			}
			if err := h.Unlock(ctx); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			if err := <-got; err != nil {
				t.Fatalf("waiter after its session expired: %v", err)
			}
		})
	}
}

// TestDisconnectRecovers: a disconnect shorter than the session timeout
// (and the lock's validity) loses nothing.
func TestDisconnectRecovers(t *testing.T) {
	z := startStandalone(t)
	const base, session = "/blip", 6 * time.Second
	fd := &faultDialer{}
	conn := connect(t, z.Addrs(), session, fd.Dial)
	c, err := NewClient(conn, Options{Base: base, SessionTimeout: session})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	other := openClient(t, "zk://"+z.Addr()+base)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	l, err := c.TryLock(ctx, "k", dlock.WithTTL(session))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	sid := conn.SessionID()
	fd.Partition()
	time.Sleep(time.Second)
	if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("other TryLock during the disconnect = %v, want ErrNotAcquired", err)
	}
	fd.Heal()
	// Wait for a refresh through the new connection.
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		err = l.Refresh(rctx, 0)
		rcancel()
		if err == nil || errors.Is(err, dlock.ErrNotHeld) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Refresh after the reconnect: %v", err)
	}
	if conn.SessionID() != sid {
		t.Fatalf("session changed across a short disconnect")
	}
	if err := l.Err(); err != nil {
		t.Fatalf("Err after a short disconnect = %v, want nil", err)
	}
	if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("other TryLock after the reconnect = %v, want ErrNotAcquired", err)
	}
	if in, err := other.Inspect(ctx, "k"); err != nil || in.Fence != l.Fence() {
		t.Fatalf("Inspect = %+v, %v; want the holder's fence %d", in, err, l.Fence())
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// faultHarness is a harness over a standalone server of its own that the
// fault scenarios may kill, restart, pause, and cut off through a proxy.
// It cuts no connections of its own: TestDisconnectRecovers and
// TestSessionExpiry do, with a session timeout chosen for them.
type faultHarness struct {
	harness
	z *testserver.ZooKeeper
	testserver.ProxyFaults
}

func (h *faultHarness) Addr() string       { return h.z.Addr() }
func (h *faultHarness) Kill(testing.TB)    { h.z.Server(0).Kill() }
func (h *faultHarness) Restart(testing.TB) { h.z.Server(0).Restart() }

func (h *faultHarness) Pause(t testing.TB) func() {
	return drivertest.Break(t, h.z.Server(0).Pause, h.z.Server(0).Resume)
}

// MakeProxiedDriver's session is short: a cut-off holder's node goes when
// its session expires on the server, which bounds the takeover.
func (h *faultHarness) MakeProxiedDriver(ctx context.Context) (driver.Locker, error) {
	return (&harness{url: "zk://" + h.Proxies[0].Addr() + "/faults?session_timeout=2s"}).MakeDriver(ctx)
}

// URL is for HolderKilled's child: a short session, which is its lease.
func (h *faultHarness) URL() string { return "zk://" + h.z.Addr() + "/faults?session_timeout=2s" }

// TestFaults runs the portable fault scenarios of a server killed and
// restarted, paused, or cut off.
func TestFaults(t *testing.T) {
	z := startStandalone(t)
	proxy := testserver.StartProxy(t, z.Addr())
	drivertest.RunFaultTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &faultHarness{harness: harness{url: "zk://" + z.Addr() + "/faults"}, z: z, ProxyFaults: testserver.ProxyFaultsOf(proxy)}, nil
	})
}
