package redlock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redlock"
)

// countingHarness makes drivers over go-redis clients of the nodes whose
// commands and pipelines (each one round trip to one node) it counts, per
// driver.
type countingHarness struct {
	nodes []*testserver.Redis
	t     testing.TB

	mu     sync.Mutex
	counts map[driver.Locker]*atomic.Int64
}

func (h *countingHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	n := new(atomic.Int64)
	cs := rawClients(h.t, h.nodes)
	for _, c := range cs {
		c.AddHook(testserver.RoundTripHook{N: n})
	}
	d, err := redlock.NewDriver(cs, redlock.Options{})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.counts[d] = n
	h.mu.Unlock()
	return d, nil
}

func (*countingHarness) Close() {}

func (h *countingHarness) RoundTrips(d driver.Locker) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[d].Load()
}

// MaxBatchRoundTrips: one pipeline per node, and one more where a node
// has lost the cached script. A batch that sends nothing (its context had
// ended) may still see one per node counted: the driver's background
// traffic (queue renewals, late fence raises) lands in the same window.
func (h *countingHarness) MaxBatchRoundTrips(n int) int64 {
	if n == 0 {
		return int64(len(h.nodes))
	}
	return int64(2 * len(h.nodes))
}

func TestBatchRefresher(t *testing.T) {
	nodes := startNodes(t, 5)
	drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &countingHarness{nodes: nodes, t: t, counts: map[driver.Locker]*atomic.Int64{}}, nil
	})
}

// TestRefreshBatchQuorum: with two of five nodes down a majority still
// answers each request; with three down every request fails with
// ErrUnavailable, promptly.
func TestRefreshBatchQuorum(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 60*time.Second)
	_, d := newClient(t, nodes, redlock.Options{})
	held, err := d.Acquire(ctx, driver.Request{Key: "held", Token: "t1", TTL: time.Minute})
	if err != nil || !held.Acquired {
		t.Fatalf("Acquire = %+v, %v", held, err)
	}
	nodes[3].Kill()
	nodes[4].Kill()
	reqs := []driver.RefreshRequest{
		{Key: "held", Token: "t1", TTL: time.Minute},
		{Key: "held", Token: "other", TTL: time.Minute},
		{Key: "free", Token: "t2", TTL: time.Minute},
	}
	errs := d.RefreshBatch(testCtx(t, 5*time.Second), reqs)
	want := []error{nil, driver.ErrNotHeld, driver.ErrNotHeld}
	for i := range reqs {
		if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
			t.Errorf("RefreshBatch[%d] with 2 of 5 nodes down = %v, want %v", i, errs[i], want[i])
		}
	}
	nodes[2].Kill()
	start := time.Now()
	errs = d.RefreshBatch(testCtx(t, 5*time.Second), reqs[:1])
	if !errors.Is(errs[0], driver.ErrUnavailable) {
		t.Errorf("RefreshBatch with 3 of 5 nodes down = %v, want ErrUnavailable", errs[0])
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("RefreshBatch with 3 of 5 nodes down took %v", d)
	}
}
