package sqlitedlock_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/dlock-go/dlock/drivertest"
)

// BenchmarkDriver runs the portable benchmarks (uncontended, hot key,
// batched refresh; see drivertest.RunBenchmarks) on a database file, where
// every grant and release is a write transaction, and on a named in-memory
// database of this process.
func BenchmarkDriver(b *testing.B) {
	b.Run("file", func(b *testing.B) {
		drivertest.RunBenchmarks(b, &fileHarness{path: filepath.Join(b.TempDir(), "bench.db")})
	})
	b.Run("memory", func(b *testing.B) {
		drivertest.RunBenchmarks(b, &memHarness{name: fmt.Sprintf("bench-%d", memSeq.Add(1))})
	})
}
