package sqlitedlock_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/sqlitedlock"
)

// fileHarness makes drivers on one database file, each with its own
// connection, as separate processes would have.
type fileHarness struct{ path string }

func (h *fileHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	return sqlitedlock.OpenDriver(ctx, h.path, sqlitedlock.Options{})
}

func (h *fileHarness) Close() {}

// URL is for the child process of drivertest's HolderKilled.
func (h *fileHarness) URL() string { return "sqlite://" + h.path }

func TestConformance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "conformance.db")
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &fileHarness{path: path}, nil
	})
}

// memHarness makes drivers on a named in-memory database of this process.
type memHarness struct{ name string }

func (h *memHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	return sqlitedlock.OpenMemory(ctx, h.name, sqlitedlock.Options{})
}

func (h *memHarness) Close() {}

var memSeq atomic.Int64

func TestConformanceMemory(t *testing.T) {
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &memHarness{name: fmt.Sprintf("conformance-%d", memSeq.Add(1))}, nil
	})
}

// TestFaults: of the suite's fault scenarios, a file has only a holder
// process killed (HolderKilled): another process takes the key once the
// dead holder's lease runs out, with a higher fence, though nothing
// notifies it (the waiter's backoff is bounded by the holder's lease).
func TestFaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "faults.db")
	drivertest.RunFaultTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &fileHarness{path: path}, nil
	})
}
