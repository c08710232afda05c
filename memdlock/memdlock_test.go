package memdlock_test

import (
	"context"
	"testing"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/memdlock"
)

type harness struct{ s *memdlock.Store }

func (h harness) MakeDriver(context.Context) (driver.Locker, error) { return h.s.Driver(), nil }
func (h harness) Close()                                            {}

func TestConformance(t *testing.T) {
	drivertest.RunConformanceTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) {
		return harness{memdlock.NewStore()}, nil
	})
}

// BenchmarkDriver: the suite's benchmarks, the floor of the portable layer
// without a server.
func BenchmarkDriver(b *testing.B) {
	drivertest.RunBenchmarks(b, harness{memdlock.NewStore()})
}
