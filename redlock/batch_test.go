package redlock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/redlock"
)

func TestRefreshBatch(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 60*time.Second)
	_, d := newClient(t, nodes, redlock.Options{})

	// Many locks held with auto-refresh: batched, none lost.
	cd := &drivertest.RefreshCounter{Locker: d}
	c := dlock.NewClient(cd)
	defer c.Close()
	const n, ttl = 200, 600 * time.Millisecond
	locks := drivertest.HoldMany(ctx, t, c, "many/", n, ttl)
	time.Sleep(2 * time.Second)
	drivertest.CheckHeld(t, locks, "while refreshed in batches for 2s")
	if calls := cd.Batches.Load(); calls == 0 || calls > 100 {
		t.Errorf("%d RefreshBatch calls for %d locks over 2s, want a few dozen at most (not %d)", calls, n, n*10)
	}

	// Per-request results, with two nodes down: still a majority.
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
		{Key: "held", Token: "t1", TTL: time.Microsecond},
	}
	errs := d.RefreshBatch(testCtx(t, 5*time.Second), reqs)
	want := []error{nil, driver.ErrNotHeld, driver.ErrNotHeld, driver.ErrInvalidTTL}
	for i := range reqs {
		if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
			t.Errorf("RefreshBatch[%d] with 2 of 5 nodes down = %v, want %v", i, errs[i], want[i])
		}
	}
	// Three down: no majority can answer.
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
