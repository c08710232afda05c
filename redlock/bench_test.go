package redlock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// Each benchmark starts five fresh redis-servers (no persistence) on
// loopback; compare BenchmarkDriver/Uncontended with BenchmarkRawFloor
// from one run.

// BenchmarkDriver runs the portable benchmarks (uncontended, hot key,
// batched refresh; see drivertest.RunBenchmarks) over five nodes through a
// redlock:// URL. An uncontended lock is one parallel round of acquire
// scripts (the nodes agree on the fence, so no second round) and one of
// release scripts.
func BenchmarkDriver(b *testing.B) {
	nodes := startNodes(b, 5)
	drivertest.RunBenchmarks(b, urlHarness(testserver.RedlockURL(nodes...)))
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
