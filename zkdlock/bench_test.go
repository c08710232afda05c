package zkdlock

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// deleteWatches counts the watch notifications (node deleted under prefix)
// delivered to the connections made with its dialer and callback.
type deleteWatches struct {
	prefix string
	n      atomic.Int64
}

func (w *deleteWatches) callback(ev zk.Event) {
	if ev.Type == zk.EventNodeDeleted && strings.HasPrefix(ev.Path, w.prefix) {
		w.n.Add(1)
	}
}

// countingConn opens a go-zookeeper connection whose deletion watch events
// are counted by w.
func countingConn(tb testing.TB, addrs []string, w *deleteWatches) *zk.Conn {
	tb.Helper()
	up := make(chan struct{}, 1)
	conn, _, err := zk.Connect(addrs, 10*time.Second, zk.WithDialer(net.DialTimeout), zk.WithLogger(discardLogger{}),
		zk.WithEventCallback(func(ev zk.Event) {
			w.callback(ev)
			if ev.Type == zk.EventSession && ev.State == zk.StateHasSession {
				select {
				case up <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		tb.Fatalf("zk.Connect: %v", err)
	}
	tb.Cleanup(conn.Close)
	select {
	case <-up:
	case <-time.After(20 * time.Second):
		tb.Fatal("no session after 20s")
	}
	return conn
}

// TestOneWakeupPerRelease: waiters watch only their predecessor, so each
// release wakes exactly one waiter (no herd).
func TestOneWakeupPerRelease(t *testing.T) {
	z := startStandalone(t)
	const base, key, waiters = "/herd", "hot", 6
	w := &deleteWatches{prefix: Path(base, key) + "/"}
	var drivers []*zkDriver
	var clients []*dlock.Client
	for i := 0; i <= waiters; i++ {
		d, err := NewDriver(countingConn(t, z.Addrs(), w), Options{Base: base, SessionTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		drivers = append(drivers, d.(*zkDriver))
		c := dlock.NewClient(d, dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
		t.Cleanup(func() { _ = c.Close() })
		clients = append(clients, c)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	h, err := clients[0].TryLock(ctx, key)
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	var wg sync.WaitGroup
	for i := 1; i <= waiters; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := clients[i].Lock(ctx, key)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
			_ = l.Unlock(ctx)
		}()
	}
	// Release once every waiter watches its predecessor: a waiter whose
	// predecessor went before its watch was set takes its turn without a
	// wake-up, and would leave a release with no watch event.
	for i, d := range drivers[1:] {
		for d.armed.Load() == 0 {
			if ctx.Err() != nil {
				t.Fatalf("waiter %d set no watch", i+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := h.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	within(t, 20*time.Second, "the waiters", wg.Wait)
	var wakeups int64
	for _, d := range drivers {
		wakeups += d.wakeups.Load()
	}
	// Releases that had a waiter behind them: the holder's and those of
	// all waiters but the last.
	if got, want := w.n.Load(), int64(waiters); got != want {
		t.Errorf("deletion watch events = %d for %d releases with a waiter, want one each", got, want)
	}
	if wakeups != waiters {
		t.Errorf("waiter wake-ups = %d, want %d", wakeups, waiters)
	}
}

// serverRequests returns the number of requests the server has received
// (srvr's "Received"), pings included.
func serverRequests(t *testing.T, z *testserver.ZooKeeper) int {
	t.Helper()
	out, err := testserver.FourLetterWord(t.Context(), z.Addr(), "srvr")
	if err != nil {
		t.Fatalf("srvr: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Received: "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("srvr: %q", line)
			}
			return n
		}
	}
	t.Fatalf("srvr reply without Received: %q", out)
	return 0
}

// TestRequestsPerCycle: an uncontended lock–unlock cycle costs dlock two
// requests (the create's transaction, which also proves the node first and
// gives the fence, and the delete), one fewer than zk.Lock (create, list,
// delete).
func TestRequestsPerCycle(t *testing.T) {
	z := startStandalone(t)
	const base, cycles = "/requests", 200
	w := &deleteWatches{}
	c, err := NewClient(countingConn(t, z.Addrs(), w), Options{Base: base, SessionTimeout: 10 * time.Second},
		dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	zl := zk.NewLock(countingConn(t, z.Addrs(), w), Path(base, "zk"), zk.WorldACL(zk.PermAll))
	ctx := t.Context()
	// The first cycles create the key nodes.
	for i := 0; i < 2; i++ {
		l, err := c.Lock(ctx, "dlock")
		if err != nil {
			t.Fatal(err)
		}
		_ = l.Unlock(ctx)
		if err := zl.Lock(); err != nil {
			t.Fatal(err)
		}
		_ = zl.Unlock()
	}
	r0 := serverRequests(t, z)
	for i := 0; i < cycles; i++ {
		l, err := c.Lock(ctx, "dlock")
		if err != nil {
			t.Fatal(err)
		}
		if l.Fence() == 0 {
			t.Fatal("no fence")
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r1 := serverRequests(t, z)
	for i := 0; i < cycles; i++ {
		if err := zl.Lock(); err != nil {
			t.Fatal(err)
		}
		if err := zl.Unlock(); err != nil {
			t.Fatal(err)
		}
	}
	r2 := serverRequests(t, z)
	// srvr itself and the sessions' pings count too: allow a few.
	dl, zl2 := float64(r1-r0-1)/cycles, float64(r2-r1-1)/cycles
	t.Logf("requests per cycle: dlock %.2f, zk.Lock %.2f", dl, zl2)
	if dl > 2.05 || dl > zl2-0.95 {
		t.Errorf("dlock sends %.2f requests per uncontended cycle, want 2, one fewer than zk.Lock (%.2f)", dl, zl2)
	}
}

// BenchmarkDriver runs the portable benchmarks (uncontended, hot key,
// batched refresh; see drivertest.RunBenchmarks) on a standalone server.
// The bench module compares them with go-zookeeper's zk.Lock (see
// docs/benchmarks.md); TestOneWakeupPerRelease checks that a release wakes
// one waiter.
func BenchmarkDriver(b *testing.B) {
	z := testserver.StartZooKeeper(b, testserver.ZooKeeperConfig{})
	drivertest.RunBenchmarks(b, &harness{url: "zk://" + z.Addr() + "/bench"})
}
