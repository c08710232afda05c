package redlock_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redlock"
)

func TestBatchRefresher(t *testing.T) {
	nodes := startNodes(t, 5)
	drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &redistest.CountingHarness{Servers: len(nodes), New: func(_ context.Context, n *atomic.Int64) (driver.Locker, error) {
			cs := rawClients(t, nodes)
			for _, c := range cs {
				c.AddHook(testserver.RoundTripHook{N: n})
			}
			return redlock.NewDriver(cs, redlock.Options{})
		}}, nil
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
