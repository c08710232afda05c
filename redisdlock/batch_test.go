package redisdlock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

func TestRefreshBatch(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	take := func(key, token string) {
		t.Helper()
		res, err := d.Acquire(ctx, driver.Request{Key: key, Token: token, TTL: time.Minute})
		if err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v", key, res, err)
		}
	}
	take("held", "t1")
	take("stolen", "other")
	take("dup", "t3")
	// Evict cached scripts: the batch must fall back to sending the text.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	reqs := []driver.RefreshRequest{
		{Key: "held", Token: "t1", TTL: 2 * time.Minute},
		{Key: "stolen", Token: "t2", TTL: time.Minute},
		{Key: "free", Token: "t4", TTL: time.Minute},
		{Key: "dup", Token: "nope", TTL: time.Minute},
		{Key: "dup", Token: "t3", TTL: time.Minute},
		{Key: "short", Token: "t5", TTL: time.Microsecond},
	}
	errs := d.RefreshBatch(ctx, reqs)
	want := []error{nil, driver.ErrNotHeld, driver.ErrNotHeld, driver.ErrNotHeld, nil, driver.ErrInvalidTTL}
	for i := range reqs {
		if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
			t.Errorf("RefreshBatch[%d] (%s/%s) = %v, want %v", i, reqs[i].Key, reqs[i].Token, errs[i], want[i])
		}
	}
	if pttl := rdb.PTTL(ctx, "held").Val(); pttl < time.Minute+50*time.Second {
		t.Errorf("PTTL of the refreshed lock = %v, want about 2m", pttl)
	}
	// Server gone: every request fails with ErrUnavailable, within ctx.
	srv.Kill()
	errs = d.RefreshBatch(testCtx(t, time.Second), reqs[:2])
	for i, err := range errs {
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("RefreshBatch[%d] with the server down = %v, want ErrUnavailable", i, err)
		}
	}
}

func TestManyLocksRefreshInBatches(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
	cd := &drivertest.RefreshCounter{Locker: d}
	c := dlock.NewClient(cd)
	defer c.Close()
	const n, ttl = 300, 600 * time.Millisecond
	locks := drivertest.HoldMany(ctx, t, c, "many/", n, ttl)
	time.Sleep(2 * time.Second)
	drivertest.CheckHeld(t, locks, "while refreshed in batches for 2s")
	// One round trip per lock per TTL/3 would be 300 × 10 = 3000.
	if calls := cd.Batches.Load(); calls == 0 || calls > 100 {
		t.Errorf("%d RefreshBatch round trips for %d locks over 2s, want a few dozen at most", calls, n)
	} else {
		t.Logf("%d RefreshBatch round trips for %d locks over 2s", calls, n)
	}
}
