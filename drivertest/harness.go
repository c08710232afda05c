// Package drivertest is the conformance suite every dlock driver's tests
// call. A complete driver test is a few lines:
//
//	func TestConformance(t *testing.T) {
//		srv := startServer(t) // a real backend
//		drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
//			return &harness{addr: srv.Addr()}, nil
//		})
//	}
//
// Optional behaviour is declared by the driver's Capabilities (fencing,
// FIFO, re-acquire with the same token), by the optional driver interfaces
// it implements (List and ForceRelease run for a driver.Lister and a
// driver.ForceReleaser) and by optional harness methods, never skipped ad
// hoc. Besides the Client-level subtests, the suite calls the driver's
// methods directly (the Driver* subtests), because the portable layer
// short-circuits some calls locally.
//
// A driver that implements driver.BatchRefresher also calls
// RunBatchRefresherTests. CountRefreshes wraps a driver to count a Client's
// refreshes while keeping exactly the optional interfaces it implements.
package drivertest

import (
	"context"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// Harness connects the suite to one backend.
type Harness interface {
	// MakeDriver returns a new, independent driver connected to the backend,
	// as a separate process would have: its own connections, sharing the
	// backend's locks with every other driver the harness made. The suite
	// closes each driver (through its Client) when done.
	MakeDriver(ctx context.Context) (driver.Locker, error)
	// Close frees what the harness holds. The suite calls it once.
	Close()
}

// HarnessMaker makes a Harness for one subtest. It may reuse a server the
// driver's test started once; the suite uses keys unique to each subtest.
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// ShortTTLer is an optional Harness method: the shortest TTL the suite may
// use in expiry tests (default 300 ms). Backends with a coarse lease (etcd
// leases count whole seconds) return more.
type ShortTTLer interface {
	ShortTTL() time.Duration
}

// LocalNotifier is an optional Harness method for a driver whose release
// notifications reach only the waiters of the driver that released (MySQL
// has no notifications between connections). The suite then expects a
// hand-off between clients within the holder's lease, which bounds every
// wait, instead of at once.
type LocalNotifier interface {
	LocalNotifications() bool
}

// localNotifications reports whether the harness declares LocalNotifier.
func (s *suite) localNotifications() bool {
	ln, ok := s.h.(LocalNotifier)
	return ok && ln.LocalNotifications()
}
