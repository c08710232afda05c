// Package redistest holds what the tests of redisdlock and redlock share:
// the harnesses of the conformance, batch-refresh and fault suites
// (URLHarness, CountingHarness, FaultHarness) and the URLs every scheme of
// the Redis family refuses (InvalidURLs).
package redistest

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/dlock-go/dlock/driver"
)

// URLHarness makes drivers from one URL with Open (the package's OpenURL),
// for drivertest.RunConformanceTests.
type URLHarness struct {
	URL  string
	Open func(context.Context, *driver.URL) (driver.Locker, error)
}

// MakeDriver implements drivertest.Harness.
func (h URLHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	u, err := driver.ParseURL(h.URL)
	if err != nil {
		return nil, err
	}
	return h.Open(ctx, u)
}

// Close implements drivertest.Harness.
func (URLHarness) Close() {}

// CountingHarness makes drivers whose go-redis clients count their round
// trips (commands and pipelines, each one round trip to one server), per
// driver, for drivertest.RunBatchRefresherTests. It implements
// drivertest.RoundTripCounter.
type CountingHarness struct {
	// Servers is the number of servers a batch reaches: a Cluster's
	// masters, or Redlock's nodes; one for a single server.
	Servers int
	// New makes a driver whose clients add their round trips to n (see
	// testserver.RoundTripHook).
	New func(ctx context.Context, n *atomic.Int64) (driver.Locker, error)

	mu     sync.Mutex
	counts map[driver.Locker]*atomic.Int64
}

// MakeDriver implements drivertest.Harness.
func (h *CountingHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	n := new(atomic.Int64)
	d, err := h.New(ctx, n)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts == nil {
		h.counts = map[driver.Locker]*atomic.Int64{}
	}
	h.counts[d] = n
	return d, nil
}

// Close implements drivertest.Harness.
func (*CountingHarness) Close() {}

// RoundTrips returns the round trips counted for d, a driver of h.
func (h *CountingHarness) RoundTrips(d driver.Locker) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[d].Load()
}

// MaxBatchRoundTrips allows one pipeline per server, and one more where a
// server has lost the cached script. A batch that sends nothing (its
// context had ended) may still see one per server counted: the driver's
// background traffic (queue renewals, late fence raises) lands in the
// same window.
func (h *CountingHarness) MaxBatchRoundTrips(n int) int64 {
	if n == 0 {
		return int64(h.Servers)
	}
	return int64(2 * h.Servers)
}
