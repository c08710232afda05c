package redlock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redlock"
)

func mustParse(t testing.TB, raw string) *driver.URL {
	t.Helper()
	u, err := driver.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// proxied starts a TCP proxy in front of each node and returns them with a
// redlock URL through the proxies.
func proxied(t testing.TB, nodes []*testserver.Redis, params string) ([]*testserver.Proxy, string) {
	t.Helper()
	ps := make([]*testserver.Proxy, len(nodes))
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		ps[i] = testserver.StartProxy(t, n.Addr())
		addrs[i] = ps[i].Addr()
	}
	u := "redlock://" + strings.Join(addrs, ",")
	if params != "" {
		u += "?" + params
	}
	return ps, u
}

// exclusive has 4 goroutines per client take key 10 times each, and fails
// the test if two critical sections overlap.
func exclusive(t *testing.T, ctx context.Context, key string, clients ...*dlock.Client) {
	t.Helper()
	var (
		inside, overlap atomic.Int32
		wg              sync.WaitGroup
	)
	for g := range 4 * len(clients) {
		wg.Go(func() {
			for range 10 {
				l, err := clients[g%len(clients)].Lock(ctx, key, dlock.WithRetry(dlock.ExponentialBackoff(time.Millisecond, 20*time.Millisecond)))
				if err != nil {
					t.Errorf("exclusion run: Lock: %v", err)
					return
				}
				if inside.Add(1) != 1 {
					overlap.Add(1)
				}
				time.Sleep(100 * time.Microsecond)
				inside.Add(-1)
				if err := l.Unlock(ctx); err != nil {
					t.Errorf("exclusion run: Unlock: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := overlap.Load(); n != 0 {
		t.Fatalf("critical sections overlapped %d times", n)
	}
}

// TestFaults: the server faults of drivertest.RunFaultTests (a crash and a
// restart, connections ended, a partition, a paused server) on every node
// of five at once, and on a majority of them while the other two keep
// answering; the nodes keep their writes.
func TestFaults(t *testing.T) {
	nodes, proxies := redistest.StartFaultServers(t, 5)
	for _, broken := range []int{5, 3} {
		var healthy []string
		for _, n := range nodes[broken:] {
			healthy = append(healthy, n.Addr())
		}
		t.Run(map[int]string{5: "AllNodes", 3: "Majority"}[broken], func(t *testing.T) {
			h := &redistest.FaultHarness{Servers: nodes[:broken], ProxyFaults: testserver.ProxyFaultsOf(proxies[:broken]...), Open: func(ctx context.Context, addrs []string) (driver.Locker, error) {
				return urlHarness("redlock://" + strings.Join(append(addrs, healthy...), ",")).MakeDriver(ctx)
			}}
			if broken == len(nodes) {
				h.URLForChild = testserver.RedlockURL(nodes...)
			}
			drivertest.RunFaultTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) { return h, nil })
		})
	}
}

// TestNodesDown: with 3 of 5 nodes silent (blackholed, node_timeout=100ms)
// or down, TryLock and Lock fail at once, not at the caller's deadline,
// with an error saying the quorum was not reached and naming a node; with
// 2 of 5 down locks are still granted and exclusive. (What a majority's
// crash, partition or pause does to a held lock, and the recovery, is
// TestFaults/Majority.)
func TestNodesDown(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 60*time.Second)
	url := testserver.RedlockURL(nodes...)
	ps, viaProxies := proxied(t, nodes, "node_timeout=100ms")
	a, b, cut := openURL(t, url), openURL(t, url), openURL(t, viaProxies)
	quorumLost := func(what string, c *dlock.Client, node string) {
		t.Helper()
		for _, try := range []bool{true, false} {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			if try {
				_, err = c.TryLock(lctx, "k")
			} else {
				_, err = c.Lock(lctx, "k")
			}
			ended := lctx.Err()
			cancel()
			if !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "quorum of 3 of 5 nodes not reached") || !strings.Contains(err.Error(), node) {
				t.Fatalf("lock (try %v) with %s = %v; want ErrUnavailable saying the quorum was not reached and naming %s", try, what, err, node)
			}
			if ended != nil {
				t.Fatalf("lock (try %v) with %s returned only when its 5s deadline ended: %v", try, what, err)
			}
		}
	}

	for _, p := range ps[:3] {
		p.Blackhole(true)
	}
	quorumLost("3 of 5 nodes silent", cut, ps[0].Addr())
	for _, p := range ps[:3] {
		p.ResetAll() // the held requests never arrive
		p.Blackhole(false)
	}

	nodes[3].Kill()
	nodes[4].Kill()
	la, err := a.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock with 2 of 5 nodes down: %v", err)
	}
	if _, err := b.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("second TryLock with 2 of 5 nodes down = %v, want ErrNotAcquired", err)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatalf("Unlock with 2 of 5 nodes down: %v", err)
	}
	exclusive(t, ctx, "shared", a, b)
	// The three live nodes' "not ours" is a majority: another owner's
	// Refresh and Release, and the Refresh of a holder freed by an
	// operator, get ErrNotHeld, not ErrUnavailable because two nodes
	// cannot answer.
	d, err := redlock.OpenURL(ctx, mustParse(t, url))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	lf, err := a.TryLock(ctx, "freed", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryLock with 2 of 5 nodes down: %v", err)
	}
	if err := d.Refresh(ctx, "freed", "other", time.Minute); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("another owner's Refresh with 2 of 5 nodes down = %v, want ErrNotHeld", err)
	}
	if err := d.Release(ctx, "freed", "other"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("another owner's Release with 2 of 5 nodes down = %v, want ErrNotHeld", err)
	}
	if in, err := b.ForceUnlock(ctx, "freed"); err != nil || !in.Held {
		t.Fatalf("ForceUnlock with 2 of 5 nodes down = %+v, %v; want the holder freed", in, err)
	}
	if err := lf.Refresh(ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("the freed holder's Refresh with 2 of 5 nodes down = %v, want ErrNotHeld", err)
	}

	nodes[2].Kill()
	quorumLost("3 of 5 nodes down", a, nodes[2].Addr())
}

// TestLatencyPastTTL: when the replies of a majority come later than the
// lease, the acquire is not reported as a grant, whether the node timeout
// cuts the slow nodes off or lets them answer too late.
func TestLatencyPastTTL(t *testing.T) {
	const ttl = 200 * time.Millisecond
	for _, tc := range []struct {
		name, params string
		want         string
	}{
		{"node timeout", "", "quorum"},
		{"validity", "node_timeout=5s", "past the validity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := startNodes(t, 5)
			ctx := testCtx(t, 60*time.Second)
			ps, url := proxied(t, nodes, tc.params)
			a, b := openURL(t, url), openURL(t, url)
			// Warm the connections so the delay is the reply's alone.
			if l, err := a.TryLock(ctx, "warm"); err != nil {
				t.Fatalf("TryLock: %v", err)
			} else {
				_ = l.Unlock(ctx)
			}
			for _, p := range ps[:3] {
				p.SetLatency(ttl * 3 / 4) // each way: a round trip is 1.5 TTL
			}
			l, err := a.TryLock(ctx, "k", dlock.WithTTL(ttl))
			if err == nil {
				_ = l.Unlock(ctx)
				t.Fatalf("TryLock answered by a majority after %v granted the lock (deadline %v)", ttl*3/2, l.Deadline())
			}
			if !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("TryLock with slow replies = %v; want ErrUnavailable containing %q", err, tc.want)
			}
			for _, p := range ps[:3] {
				p.SetLatency(0)
			}
			// Whatever the slow attempt took is given back or expires:
			// another client gets the key.
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			lb, err := b.Lock(wctx, "k", dlock.WithTTL(time.Second))
			if err != nil {
				t.Fatalf("Lock after the latency is gone: %v", err)
			}
			_ = lb.Unlock(ctx)
		})
	}
}

// TestDelayedRestart: nodes restarted without persistence, each kept down
// longer than the TTL, never let a second client in while the holder keeps
// a majority; when the holder loses its majority, its validity deadline
// has passed before anyone else is granted the key.
//
// Nothing here depends on how fast the machine is: the TTL and the node
// timeout leave a loaded machine seconds to answer, the connections are up
// before the scenario starts, and the takeover is awaited, not timed.
func TestDelayedRestart(t *testing.T) {
	const ttl = 2 * time.Second
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 90*time.Second)
	url := testserver.RedlockURL(nodes...) + "?node_timeout=1s"
	a, b := openURL(t, url), openURL(t, url)
	for _, c := range []*dlock.Client{a, b} {
		// Dial every node before the TTLs start to count.
		if _, err := c.Inspect(ctx, "k"); err != nil {
			t.Fatalf("Inspect: %v", err)
		}
	}
	l, err := a.TryLock(ctx, "k", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	for i := 0; i < 2; i++ {
		nodes[i].Kill()
		time.Sleep(ttl + ttl/4) // the scenario: down longer than the TTL
		nodes[i].Restart()
		if lb, err := b.TryLock(ctx, "k", dlock.WithTTL(ttl)); err == nil {
			t.Fatalf("after restarting node %d: second client granted the key (fence %d) while the first holds it (err %v)", i, lb.Fence(), l.Err())
		}
		if err := l.Err(); err != nil {
			t.Fatalf("after restarting node %d: holder lost the lock with a majority still up: %v", i, err)
		}
	}
	// A third node lost: the holder is left with 2 of 5, and its keys
	// there run out within the TTL.
	nodes[2].Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lb, err := b.TryLock(ctx, "k", dlock.WithTTL(ttl))
		if err == nil {
			// The nodes freed the holder's key no earlier than its last
			// refresh was sent plus the TTL, after its validity deadline.
			if now, d := time.Now(), l.Deadline(); now.Before(d) {
				t.Fatalf("second client granted the key (fence %d) %v before the first one's validity deadline", lb.Fence(), d.Sub(now))
			}
			if lb.Fence() <= l.Fence() {
				t.Errorf("fence after takeover = %d, want > %d", lb.Fence(), l.Fence())
			}
			_ = lb.Unlock(ctx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second client never granted the key after the holder lost its majority: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(l.Err(), dlock.ErrLost) {
		t.Fatalf("holder Err = %v, want ErrLost", l.Err())
	}
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("holder's Done not closed 10s after its lock was lost")
	}
}
