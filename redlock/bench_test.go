package redlock_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// Each benchmark starts five fresh redis-servers (no persistence) on
// loopback; compare BenchmarkUncontended with BenchmarkRawFloor from one
// run.

// BenchmarkUncontended is one dlock TryLock and Unlock on a free key over
// five nodes: one parallel round of acquire scripts (the nodes agree on the
// fence, so no second round), one parallel round of release scripts.
func BenchmarkUncontended(b *testing.B) {
	nodes := startNodes(b, 5)
	c := openURL(b, testserver.RedlockURL(nodes...))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := c.TryLock(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawFloor is the floor: bare go-redis SET NX PX on the five nodes
// in parallel, then an EVAL compare-and-delete on the five in parallel, the
// commands a minimal Redlock client sends (no fence, no validity, no
// notifications).
func BenchmarkRawFloor(b *testing.B) {
	nodes := startNodes(b, 5)
	cs := rawClients(b, nodes)
	ctx := context.Background()
	const cad = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`
	parallel := func(f func(i int) error) {
		var wg sync.WaitGroup
		errs := make([]error, len(cs))
		for i := range cs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = f(i) }()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		parallel(func(i int) error { return cs[i].SetNX(ctx, "bench", "token", 30*time.Second).Err() })
		parallel(func(i int) error { return cs[i].Eval(ctx, cad, []string{"bench"}, "token").Err() })
	}
}

// BenchmarkHotKey: 16 contenders, each its own Client (as separate
// processes would be), take one key in turn over five nodes and hold it
// about 1 ms. b.N counts critical sections. It reports critical sections
// per second, the hand-off latency from one holder's Unlock returning to
// another contender's Lock returning (p50, p99), and script calls per
// acquisition summed over the five nodes (INFO commandstats).
func BenchmarkHotKey(b *testing.B) {
	const contenders = 16
	const hold = time.Millisecond
	nodes := startNodes(b, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	clients := make([]*dlock.Client, contenders)
	for i := range clients {
		clients[i] = openURL(b, testserver.RedlockURL(nodes...))
	}
	type grant struct {
		who                  int
		acquired, unlockDone time.Time
	}
	var (
		mu     sync.Mutex
		grants = make([]grant, 0, b.N)
		left   atomic.Int64
		wg     sync.WaitGroup
		errs   = make(chan error, contenders)
	)
	left.Store(int64(b.N))
	before := scriptCalls(b, nodes)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < contenders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				l, err := clients[i].Lock(ctx, "hot", dlock.WithTTL(10*time.Second))
				if err != nil {
					errs <- err
					return
				}
				acquired := time.Now()
				time.Sleep(hold)
				if err := l.Unlock(ctx); err != nil {
					errs <- err
					return
				}
				g := grant{who: i, acquired: acquired, unlockDone: time.Now()}
				mu.Lock()
				grants = append(grants, g)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	after := scriptCalls(b, nodes)

	slices.SortFunc(grants, func(x, y grant) int { return x.acquired.Compare(y.acquired) })
	var handoffs []time.Duration
	for i := 1; i < len(grants); i++ {
		if grants[i].who == grants[i-1].who {
			continue
		}
		handoffs = append(handoffs, max(grants[i].acquired.Sub(grants[i-1].unlockDone), 0))
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cs/s")
	if len(handoffs) > 0 {
		slices.Sort(handoffs)
		b.ReportMetric(float64(handoffs[len(handoffs)/2].Microseconds()), "handoff-p50-µs")
		b.ReportMetric(float64(handoffs[len(handoffs)*99/100].Microseconds()), "handoff-p99-µs")
	}
	b.ReportMetric(float64(after-before)/float64(b.N), "scripts/acq")
}

// scriptCalls returns the EVAL and EVALSHA calls of all nodes together.
func scriptCalls(b *testing.B, nodes []*testserver.Redis) int {
	b.Helper()
	total := 0
	for _, n := range nodes {
		out, err := n.Do(testCtx(b, 10*time.Second), "INFO", "commandstats")
		if err != nil {
			b.Fatalf("INFO commandstats: %v", err)
		}
		for _, line := range strings.Split(out, "\n") {
			name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok || (name != "cmdstat_evalsha" && name != "cmdstat_eval") {
				continue
			}
			for _, f := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(f, "calls="); ok {
					c, _ := strconv.Atoi(v)
					total += c
				}
			}
		}
	}
	return total
}
