package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// cancelBound is how long a waiter may take to return after its ctx is
// cancelled: well under the 100 ms the other backends keep.
const cancelBound = 100 * time.Millisecond

// queueLen returns the number of lock nodes under the key node at keyPath
// (0 when the key node is gone), read after a sync with the leader.
func queueLen(t *testing.T, conn *zk.Conn, keyPath string) int {
	t.Helper()
	if _, err := conn.Sync(keyPath); err != nil && !errors.Is(err, zk.ErrNoNode) {
		t.Fatalf("sync %s: %v", keyPath, err)
	}
	kids, _, err := conn.Children(keyPath)
	if errors.Is(err, zk.ErrNoNode) {
		return 0
	}
	if err != nil {
		t.Fatalf("children of %s: %v", keyPath, err)
	}
	return len(kids)
}

// awaitEmptyQueue fails the test unless the queue at keyPath empties
// within d.
func awaitEmptyQueue(t *testing.T, conn *zk.Conn, keyPath string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		n := queueLen(t, conn, keyPath)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lock nodes %v after the waiters left, want 0", keyPath, n, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCancelLatencySoak: waiters on separate sessions take one hot key in
// a loop; about a third of the Lock calls are cancelled at a random moment
// of their wait. Every cancelled Lock returns within cancelBound of its
// cancel, no two holders overlap, and the queue is empty afterwards. Over a
// slow link (a loaded server or a distant ensemble: a round trip longer
// than the bound) a waiter that deleted its node before returning could
// not keep the bound.
func TestCancelLatencySoak(t *testing.T) {
	z := startStandalone(t)
	tests := []struct {
		name    string
		latency time.Duration // added each way
		waiters int
		cancelP float64 // share of the Lock calls cancelled
		// cancelWithin spreads the cancels over about a waiter's wait.
		cancelWithin time.Duration
	}{
		{"local", 0, 8, 0.3, 30 * time.Millisecond},
		// Fewer, slower hand-offs: more cancels, to have enough.
		{"slow link", 60 * time.Millisecond, 4, 0.5, 500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testserver.StartProxy(t, z.Addr())
			p.SetLatency(tc.latency)
			soakCancels(t, []string{p.Addr()}, tc.waiters, tc.cancelP, tc.cancelWithin)
		})
	}
}

// soakCancels runs the soak of TestCancelLatencySoak for 6 s.
func soakCancels(t *testing.T, addrs []string, waiters int, cancelP float64, cancelWithin time.Duration) {
	t.Helper()
	const (
		key  = "soak"
		soak = 6 * time.Second
	)
	base := "/dlock-cancel-" + strings.ReplaceAll(t.Name(), "/", "-")
	clients := make([]*dlock.Client, waiters)
	for i := range clients {
		c, err := NewClient(connect(t, addrs, 10*time.Second, nil), Options{Base: base, SessionTimeout: 10 * time.Second},
			dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients[i] = c
	}
	var (
		holders, overlaps, grants atomic.Int32
		mu                        sync.Mutex
		lat                       []time.Duration // cancel to return, per cancelled Lock
		wg                        sync.WaitGroup
	)
	end := time.Now().Add(soak)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for time.Now().Before(end) && !t.Failed() {
				ctx, cancel := context.WithCancel(t.Context())
				fired := make(chan time.Time, 1)
				var timer *time.Timer
				if rng.Float64() < cancelP {
					timer = time.AfterFunc(time.Duration(rng.Int64N(int64(cancelWithin))), func() {
						fired <- time.Now()
						cancel()
					})
				}
				l, err := c.Lock(ctx, key)
				returned := time.Now()
				if timer != nil {
					timer.Stop()
				}
				switch {
				case err == nil:
					grants.Add(1)
					if holders.Add(1) != 1 {
						overlaps.Add(1)
					}
					time.Sleep(time.Millisecond)
					holders.Add(-1)
					uctx, ucancel := context.WithTimeout(t.Context(), 10*time.Second)
					if err := l.Unlock(uctx); err != nil {
						t.Errorf("waiter %d: Unlock: %v", i, err)
					}
					ucancel()
				case errors.Is(err, context.Canceled):
					select {
					case at := <-fired:
						mu.Lock()
						lat = append(lat, returned.Sub(at))
						mu.Unlock()
					default:
						t.Errorf("waiter %d: Lock = %v before its cancel", i, err)
					}
				default:
					t.Errorf("waiter %d: Lock: %v", i, err)
				}
				cancel()
			}
		}()
	}
	within(t, soak+60*time.Second, "the soak", wg.Wait)

	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d grants overlapped another holder, want 0", n)
	}
	slices.Sort(lat)
	if len(lat) < 8 || grants.Load() < 8 {
		t.Fatalf("%d cancelled waiters and %d grants in %v: too few to judge", len(lat), grants.Load(), soak)
	}
	slow := 0
	for _, d := range lat {
		if d > cancelBound {
			slow++
		}
	}
	t.Logf("%d grants, %d cancelled waiters: cancel to return median %v, p99 %v, max %v",
		grants.Load(), len(lat), lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	if slow > 0 {
		t.Errorf("%d of %d cancelled waiters took longer than %v to return (max %v), want 0", slow, len(lat), cancelBound, lat[len(lat)-1])
	}
	// Nothing left behind: the queue empties (deletes still in flight
	// land within a round trip) and a newcomer takes the key at once.
	awaitEmptyQueue(t, connect(t, addrs, 10*time.Second, nil), Path(base, key), 2*time.Second)
	l, err := clients[0].TryLock(t.Context(), key)
	if err != nil {
		t.Fatalf("TryLock after the soak: %v", err)
	}
	_ = l.Unlock(t.Context())
}

// TestCloseAwaitsLeavers: a waiter on an application's connection is
// cancelled while its node's deletion is slow or cannot reach the server.
// Lock returns within cancelBound either way. Close waits for a slow
// deletion, so the node is gone when Close returns, and gives up on one
// that cannot land within its bound.
func TestCloseAwaitsLeavers(t *testing.T) {
	z := startStandalone(t)
	tests := []struct {
		name string
		// fault slows or cuts the waiter's link once it is queued.
		fault func(p *testserver.Proxy)
		// gone: the waiter's node is gone when Close returns.
		gone bool
	}{
		{"slow link", func(p *testserver.Proxy) { p.SetLatency(150 * time.Millisecond) }, true},
		{"partition", func(p *testserver.Proxy) { p.Blackhole(true) }, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base, key := fmt.Sprintf("/dlock-leavers-%d", i), "k"
			direct := connect(t, z.Addrs(), 10*time.Second, nil)
			holder, err := NewClient(direct, Options{Base: base, SessionTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = holder.Close() })
			hl, err := holder.TryLock(t.Context(), key, dlock.WithTTL(10*time.Second))
			if err != nil {
				t.Fatalf("holder TryLock: %v", err)
			}

			p := testserver.StartProxy(t, z.Addr())
			d, err := NewDriver(connect(t, []string{p.Addr()}, 10*time.Second, nil), Options{Base: base, SessionTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			waiter := dlock.NewClient(d)
			t.Cleanup(func() { _ = waiter.Close() })
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := waiter.Lock(ctx, key, dlock.WithTTL(10*time.Second))
				errc <- err
			}()
			keyPath := Path(base, key)
			deadline := time.Now().Add(10 * time.Second)
			for queueLen(t, direct, keyPath) != 2 {
				if time.Now().After(deadline) {
					t.Fatal("the waiter did not join the queue within 10s")
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // let it reach its watch
			tc.fault(p)

			cancelled := time.Now()
			cancel()
			select {
			case err := <-errc:
				if took := time.Since(cancelled); took > cancelBound {
					t.Errorf("cancelled Lock returned after %v, want within %v", took, cancelBound)
				}
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("cancelled Lock = %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("cancelled Lock did not return within 10s")
			}
			within(t, closeWait+2*time.Second, "Close", func() { _ = waiter.Close() })
			if n := queueLen(t, direct, keyPath); tc.gone && n != 1 {
				t.Errorf("%d lock nodes when Close returned, want 1 (the holder's)", n)
			}
			if err := hl.Unlock(t.Context()); err != nil {
				t.Fatalf("holder Unlock: %v", err)
			}
		})
	}
}

// TestTryLockAfterCancel: a Lock cancelled while its create is on its way
// over a slow link returns at once; the create and the node's deletion
// finish in the background. The same client's TryLock right after the
// holder's release still gets the key: it waits for its own abandoned node
// to go rather than finding it at the head of the queue.
func TestTryLockAfterCancel(t *testing.T) {
	z := startStandalone(t)
	const base, key = "/dlock-trylock-after-cancel", "k"
	holder, err := NewClient(connect(t, z.Addrs(), 10*time.Second, nil), Options{Base: base, SessionTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Close() })
	hl, err := holder.TryLock(t.Context(), key, dlock.WithTTL(10*time.Second))
	if err != nil {
		t.Fatalf("holder TryLock: %v", err)
	}
	p := testserver.StartProxy(t, z.Addr())
	c, err := NewClient(connect(t, []string{p.Addr()}, 10*time.Second, nil), Options{Base: base, SessionTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// A first try makes c know the key node and its queue, so that its
	// next requests on the key each take one round trip.
	if _, err := c.TryLock(t.Context(), key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock of the held key = %v, want ErrNotAcquired", err)
	}
	p.SetLatency(150 * time.Millisecond)

	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel) // the create is still on its way
	start := time.Now()
	if _, err := c.Lock(ctx, key, dlock.WithTTL(10*time.Second)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Lock = %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 20*time.Millisecond+cancelBound {
		t.Errorf("cancelled Lock returned %v after its start, want within %v of its cancel", took, cancelBound)
	}
	if err := hl.Unlock(t.Context()); err != nil {
		t.Fatalf("holder Unlock: %v", err)
	}
	tctx, tcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer tcancel()
	l, err := c.TryLock(tctx, key, dlock.WithTTL(10*time.Second))
	if err != nil {
		t.Fatalf("TryLock after the cancelled Lock and the release: %v", err)
	}
	if err := l.Unlock(tctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	awaitEmptyQueue(t, connect(t, z.Addrs(), 10*time.Second, nil), Path(base, key), 2*time.Second)
}
