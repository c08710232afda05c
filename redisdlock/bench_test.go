package redisdlock_test

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

// Each benchmark starts its own fresh redis-server (the same configuration)
// on loopback; compare BenchmarkUncontended with BenchmarkRawFloor from one
// run.

// BenchmarkUncontended is one dlock TryLock and Unlock on a free key: two
// round trips (two script calls), plus the token and the watchdog.
func BenchmarkUncontended(b *testing.B) {
	srv := testserver.StartRedis(b)
	c := openURL(b, srv.URL())
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

// BenchmarkRawFloor is the floor dlock is compared with: bare go-redis
// SET NX PX and an EVAL compare-and-delete, as hand-written locks do.
func BenchmarkRawFloor(b *testing.B) {
	srv := testserver.StartRedis(b)
	rdb := rawClient(b, srv.Addr())
	ctx := context.Background()
	const cad = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`
	b.ReportAllocs()
	for b.Loop() {
		ok, err := rdb.SetNX(ctx, "bench", "token", 30*time.Second).Result()
		if err != nil || !ok {
			b.Fatalf("SET NX = %v, %v", ok, err)
		}
		if n, err := rdb.Eval(ctx, cad, []string{"bench"}, "token").Int(); err != nil || n != 1 {
			b.Fatalf("EVAL = %d, %v", n, err)
		}
	}
}

// BenchmarkHotKey: 16 contenders, each its own Client (as separate
// processes would be), take one key in turn and hold it about 1 ms. b.N
// counts critical sections. It reports critical sections per second, the
// hand-off latency from one holder's Unlock returning to another
// contender's Lock returning (p50, p99), and Redis commands per
// acquisition from INFO commandstats: all commands, including those run
// inside scripts, and the script calls (round trips) among them.
func BenchmarkHotKey(b *testing.B) {
	const contenders = 16
	const hold = time.Millisecond
	srv := testserver.StartRedis(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	clients := make([]*dlock.Client, contenders)
	for i := range clients {
		clients[i] = openURL(b, srv.URL())
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
	before := commandStats(b, srv)
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
	after := commandStats(b, srv)

	slices.SortFunc(grants, func(x, y grant) int { return x.acquired.Compare(y.acquired) })
	var handoffs []time.Duration
	for i := 1; i < len(grants); i++ {
		if grants[i].who == grants[i-1].who {
			continue // the same contender again: not a hand-off
		}
		handoffs = append(handoffs, max(grants[i].acquired.Sub(grants[i-1].unlockDone), 0))
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cs/s")
	if len(handoffs) > 0 {
		slices.Sort(handoffs)
		b.ReportMetric(float64(handoffs[len(handoffs)/2].Microseconds()), "handoff-p50-µs")
		b.ReportMetric(float64(handoffs[len(handoffs)*99/100].Microseconds()), "handoff-p99-µs")
	}
	b.ReportMetric(float64(len(handoffs))/float64(max(len(grants)-1, 1))*100, "handoff-%")
	total, scripts := 0, 0
	for name, n := range after {
		d := n - before[name]
		total += d
		if name == "evalsha" || name == "eval" {
			scripts += d
		}
	}
	total-- // the INFO that read the "before" numbers
	b.ReportMetric(float64(total)/float64(b.N), "cmds/acq")
	b.ReportMetric(float64(scripts)/float64(b.N), "scripts/acq")
}

// commandStats returns the calls per command from INFO commandstats.
func commandStats(b *testing.B, srv *testserver.Redis) map[string]int {
	b.Helper()
	out, err := srv.Do(testCtx(b, 10*time.Second), "INFO", "commandstats")
	if err != nil {
		b.Fatalf("INFO commandstats: %v", err)
	}
	stats := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				stats[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(v)
			}
		}
	}
	return stats
}
