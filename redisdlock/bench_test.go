package redisdlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// Each benchmark starts its own fresh redis-server (the same configuration)
// on loopback; compare BenchmarkDriver/Uncontended with BenchmarkRawFloor
// from one run.

// BenchmarkDriver runs the portable benchmarks (uncontended, hot key,
// batched refresh; see drivertest.RunBenchmarks) through a redis:// URL.
func BenchmarkDriver(b *testing.B) {
	srv := testserver.StartRedis(b)
	drivertest.RunBenchmarks(b, urlHarness(srv.URL()))
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
