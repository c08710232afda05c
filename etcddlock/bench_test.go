package etcddlock

import (
	"testing"

	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// BenchmarkDriver runs the portable benchmarks (uncontended, hot key,
// batched refresh; see drivertest.RunBenchmarks) on a single-member server.
// The bench module compares them with concurrency.Mutex (see
// docs/benchmarks.md).
func BenchmarkDriver(b *testing.B) {
	srv := testserver.StartEtcd(b)
	drivertest.RunBenchmarks(b, &harness{url: "etcd://" + srv.Addr()})
}
