package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
)

// lockZK runs zk.Lock.LockWithData in the background; the channel receives
// its result. A lock that never comes is unblocked by the conn's Close at
// the end of the test.
func lockZK(l *zk.Lock, data string) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- l.LockWithData([]byte(data)) }()
	return ch
}

func wantPending(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s returned (%v) while the key was held by the other side", what, err)
	case <-time.After(300 * time.Millisecond):
	}
}

func wantGranted(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s not granted within 10s of the release", what)
	}
}

// TestInteropZKLockHolds: a zk.Lock on Path(base, key) excludes dlock
// clients; they see it with Inspect and take the key when it unlocks.
func TestInteropZKLockHolds(t *testing.T) {
	z := startStandalone(t)
	const base, key = "/interop", "orders/42"
	conn := connect(t, z.Addrs(), 5*time.Second, nil)
	c := openClient(t, "zk://"+z.Addr()+base+"?session_timeout=10s", dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))

	zl := zk.NewLock(conn, Path(base, key), zk.WorldACL(zk.PermAll))
	wantGranted(t, lockZK(zl, "10.0.0.7"), "zk.Lock on a free key")
	if _, err := c.TryLock(t.Context(), key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("dlock TryLock while zk.Lock holds = %v, want ErrNotAcquired", err)
	}
	in, err := c.Inspect(t.Context(), key)
	if err != nil || !in.Held || in.Metadata != "10.0.0.7" || in.Fence == 0 || in.TTL != 10*time.Second || in.Waiters != 0 {
		t.Fatalf("Inspect while zk.Lock holds = %+v, %v; want held, metadata 10.0.0.7, a fence, TTL 10s, no waiters", in, err)
	}

	got := make(chan *dlock.Lock, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		l, err := c.Lock(ctx, key)
		if err != nil {
			t.Errorf("dlock Lock: %v", err)
		}
		got <- l
	}()
	time.Sleep(300 * time.Millisecond)
	if in, _ := c.Inspect(t.Context(), key); in.Waiters != 1 {
		t.Errorf("Inspect with a dlock waiter: Waiters = %d, want 1", in.Waiters)
	}
	select {
	case <-got:
		t.Fatal("dlock Lock returned while zk.Lock holds")
	default:
	}
	if err := zl.Unlock(); err != nil {
		t.Fatalf("zk.Lock Unlock: %v", err)
	}
	var l *dlock.Lock
	select {
	case l = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("dlock waiter not granted within 10s of zk.Lock's Unlock")
	}
	if l == nil {
		t.FailNow()
	}
	if l.Fence() <= in.Fence {
		t.Errorf("dlock fence %d after zk.Lock's %d, want greater", l.Fence(), in.Fence)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// TestInteropDlockHolds: a dlock lock excludes a zk.Lock on the same path
// until it is released.
func TestInteropDlockHolds(t *testing.T) {
	z := startStandalone(t)
	const base, key = "/interop", "K"
	conn := connect(t, z.Addrs(), 5*time.Second, nil)
	c := openClient(t, "zk://"+z.Addr()+base)

	l, err := c.TryLock(t.Context(), key)
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	if got, want := Path(base, key), "/interop/K"; got != want {
		t.Fatalf("Path = %q, want %q", got, want)
	}
	zl := zk.NewLock(conn, "/interop/K", zk.WorldACL(zk.PermAll))
	ch := lockZK(zl, "")
	wantPending(t, ch, "zk.Lock")
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	wantGranted(t, ch, "zk.Lock after dlock's Unlock")
	if _, err := c.TryLock(t.Context(), key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("dlock TryLock while zk.Lock holds = %v, want ErrNotAcquired", err)
	}
	if err := zl.Unlock(); err != nil {
		t.Fatalf("zk.Lock Unlock: %v", err)
	}
	l, err = c.TryLock(t.Context(), key)
	if err != nil {
		t.Fatalf("TryLock after zk.Lock's Unlock: %v", err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// TestInteropSharedFIFO: dlock waiters and zk.Lock waiters queue in one
// line and are served in arrival order.
func TestInteropSharedFIFO(t *testing.T) {
	z := startStandalone(t)
	const base, key = "/interop", "fifo"
	holder := openClient(t, "zk://"+z.Addr()+base)
	h, err := holder.TryLock(t.Context(), key)
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	const n = 4
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	record := func(i int) {
		mu.Lock()
		order = append(order, i)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		wg.Add(1)
		if i%2 == 0 { // dlock waiter
			c := openClient(t, "zk://"+z.Addr()+base)
			go func() {
				defer wg.Done()
				l, err := c.Lock(ctx, key)
				if err != nil {
					t.Errorf("dlock waiter %d: %v", i, err)
					return
				}
				record(i)
				_ = l.Unlock(ctx)
			}()
		} else { // zk.Lock waiter, on its own session
			zl := zk.NewLock(connect(t, z.Addrs(), 5*time.Second, nil), Path(base, key), zk.WorldACL(zk.PermAll))
			go func() {
				defer wg.Done()
				if err := zl.LockWithData([]byte(fmt.Sprint("zk waiter ", i))); err != nil {
					t.Errorf("zk.Lock waiter %d: %v", i, err)
					return
				}
				record(i)
				_ = zl.Unlock()
			}()
		}
		time.Sleep(200 * time.Millisecond) // queue them one after another
	}
	if in, err := holder.Inspect(t.Context(), key); err != nil || in.Waiters != n {
		t.Errorf("Inspect = %+v, %v; want %d waiters", in, err, n)
	}
	if err := h.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	within(t, 20*time.Second, "the queue", wg.Wait)
	mu.Lock()
	defer mu.Unlock()
	for i, got := range order {
		if got != i {
			t.Fatalf("grant order = %v, want 0..%d (arrival order)", order, n-1)
		}
	}
	if len(order) != n {
		t.Fatalf("%d waiters granted, want %d", len(order), n)
	}
}

// TestKeyNodeWithoutWrite: a key node made by someone else whose ACL lets
// us create children but not write it still works (the fence is then read
// separately).
func TestKeyNodeWithoutWrite(t *testing.T) {
	z := startStandalone(t)
	conn := connect(t, z.Addrs(), 5*time.Second, nil)
	for _, p := range []string{"/nowrite", Path("/nowrite", "k")} {
		acl := zk.WorldACL(zk.PermAll)
		if p != "/nowrite" {
			acl = zk.WorldACL(zk.PermCreate | zk.PermRead | zk.PermDelete)
		}
		if _, err := conn.Create(p, nil, zk.FlagPersistent, acl); err != nil {
			t.Fatalf("Create(%s): %v", p, err)
		}
	}
	c := openClient(t, "zk://"+z.Addr()+"/nowrite")
	for i := 0; i < 3; i++ {
		l, err := c.TryLock(t.Context(), "k")
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		kids, _, err := conn.Children(Path("/nowrite", "k"))
		if err != nil || len(kids) != 1 {
			t.Fatalf("Children = %v, %v; want one lock node", kids, err)
		}
		_, stat, err := conn.Exists(Path("/nowrite", "k") + "/" + kids[0])
		if err != nil || uint64(stat.Czxid) != l.Fence() {
			t.Fatalf("lock node czxid = %d (%v), want the fence %d", stat.Czxid, err, l.Fence())
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
	}
}

// TestKeyNodeCleanup: a key node left empty is deleted after a short idle
// time, or at once when the client closes; a busy one stays.
func TestKeyNodeCleanup(t *testing.T) {
	z := startStandalone(t)
	const base = "/cleanup"
	conn := connect(t, z.Addrs(), 5*time.Second, nil)
	exists := func(key string) bool {
		ok, _, err := conn.Exists(Path(base, key))
		if err != nil {
			t.Fatalf("Exists: %v", err)
		}
		return ok
	}
	c := openClient(t, "zk://"+z.Addr()+base)
	for _, key := range []string{"idle", "a/b", ".."} {
		l, err := c.TryLock(t.Context(), key)
		if err != nil {
			t.Fatalf("TryLock(%q): %v", key, err)
		}
		if !exists(key) {
			t.Fatalf("key node of %q missing while held", key)
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for (exists("idle") || exists("a/b") || exists("..")) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if exists("idle") || exists("a/b") || exists("..") {
		t.Fatal("empty key nodes still there 10s after the release")
	}
	// At Close, pending clean-ups run at once.
	c2 := openClient(t, "zk://"+z.Addr()+base)
	l, err := c2.TryLock(t.Context(), "closing")
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if err := c2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if exists("closing") {
		t.Fatal("empty key node still there after Close")
	}
	// The base itself stays.
	if ok, _, _ := conn.Exists(base); !ok {
		t.Fatal("base path deleted")
	}
}
