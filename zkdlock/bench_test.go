package zkdlock

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
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
	for {
		in, err := clients[0].Inspect(ctx, key)
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		if in.Waiters == waiters {
			break
		}
		time.Sleep(10 * time.Millisecond)
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

func startBenchServer(b *testing.B) *testserver.ZooKeeper {
	b.Helper()
	return testserver.StartZooKeeper(b, testserver.ZooKeeperConfig{})
}

// BenchmarkUncontended: one lock–unlock cycle on a free key, dlock's Lock
// beside go-zookeeper's zk.Lock on the same server, interleaved in one run.
// Metrics: ns per cycle of each, and their ratio (dlock/zk.Lock; below 1
// means dlock is faster).
func BenchmarkUncontended(b *testing.B) {
	z := startBenchServer(b)
	const base = "/bench-uncontended"
	w := &deleteWatches{}
	c, err := NewClient(countingConn(b, z.Addrs(), w), Options{Base: base, SessionTimeout: 10 * time.Second},
		dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	zl := zk.NewLock(countingConn(b, z.Addrs(), w), Path(base, "zk"), zk.WorldACL(zk.PermAll))
	ctx := context.Background()
	for i := 0; i < 100; i++ { // warm up the server
		if l, err := c.Lock(ctx, "dlock"); err == nil {
			_ = l.Unlock(ctx)
		}
		if zl.Lock() == nil {
			_ = zl.Unlock()
		}
	}
	var dl, zt time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		l, err := c.Lock(ctx, "dlock")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := zl.Lock(); err != nil {
			b.Fatal(err)
		}
		if err := zl.Unlock(); err != nil {
			b.Fatal(err)
		}
		dl += t1.Sub(t0)
		zt += time.Since(t1)
	}
	b.ReportMetric(float64(dl.Nanoseconds())/float64(b.N), "dlock-ns/cycle")
	b.ReportMetric(float64(zt.Nanoseconds())/float64(b.N), "zklock-ns/cycle")
	b.ReportMetric(float64(dl)/float64(zt), "dlock/zklock")
}

// BenchmarkHandOff: contenders, each on its own session, take and release
// one hot key in turn; b.N hand-offs with dlock and b.N with zk.Lock on the
// same server, interleaved in rounds. Metrics: ns per hand-off of each, their ratio, and watch
// notifications per release (1 means no herd).
func BenchmarkHandOff(b *testing.B) {
	for _, contenders := range []int{2, 8} {
		b.Run(fmt.Sprint("contenders=", contenders), func(b *testing.B) {
			z := startBenchServer(b)
			base := fmt.Sprint("/bench-handoff-", contenders)
			dw := &deleteWatches{prefix: Path(base, "dlock") + "/"}
			zw := &deleteWatches{prefix: Path(base, "zk") + "/"}
			var clients []*dlock.Client
			var locks []*zk.Lock
			for i := 0; i < contenders; i++ {
				c, err := NewClient(countingConn(b, z.Addrs(), dw), Options{Base: base, SessionTimeout: 10 * time.Second},
					dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = c.Close() })
				clients = append(clients, c)
				locks = append(locks, zk.NewLock(countingConn(b, z.Addrs(), zw), Path(base, "zk"), zk.WorldACL(zk.PermAll)))
			}
			ctx := context.Background()
			// run makes n hand-offs among the contenders.
			run := func(n int, take func(i int) (release func() error, err error)) time.Duration {
				var (
					left  atomic.Int64
					wg    sync.WaitGroup
					start = time.Now()
				)
				left.Store(int64(n))
				for i := 0; i < contenders; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for left.Add(-1) >= 0 {
							release, err := take(i)
							if err != nil {
								b.Error(err)
								return
							}
							if err := release(); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				return time.Since(start)
			}
			withDlock := func(i int) (func() error, error) {
				l, err := clients[i].Lock(ctx, "dlock")
				if err != nil {
					return nil, err
				}
				return func() error { return l.Unlock(ctx) }, nil
			}
			withZK := func(i int) (func() error, error) {
				if err := locks[i].Lock(); err != nil {
					return nil, err
				}
				return locks[i].Unlock, nil
			}
			run(200, withDlock) // warm up the server
			run(200, withZK)
			dw.n.Store(0)
			zw.n.Store(0)
			b.ResetTimer()
			// Interleave in rounds, alternating which goes first, so that
			// both see the same server and machine.
			var dl, zt time.Duration
			const rounds = 10
			for r := 0; r < rounds; r++ {
				n := b.N / rounds
				if r == 0 {
					n += b.N % rounds
				}
				if r%2 == 0 {
					dl += run(n, withDlock)
					zt += run(n, withZK)
				} else {
					zt += run(n, withZK)
					dl += run(n, withDlock)
				}
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(dl.Nanoseconds())/n, "dlock-ns/handoff")
			b.ReportMetric(float64(zt.Nanoseconds())/n, "zklock-ns/handoff")
			b.ReportMetric(float64(dl)/float64(zt), "dlock/zklock")
			b.ReportMetric(float64(dw.n.Load())/n, "dlock-wakeups/release")
			b.ReportMetric(float64(zw.n.Load())/n, "zklock-wakeups/release")
		})
	}
}
