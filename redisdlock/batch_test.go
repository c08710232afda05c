package redisdlock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// countingHarness makes drivers over go-redis clients whose commands and
// pipelines (each one round trip to one server) it counts, per driver.
type countingHarness struct {
	addrs []string // one server, or a Cluster's masters
	t     testing.TB

	mu     sync.Mutex
	counts map[driver.Locker]*atomic.Int64
}

func (h *countingHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	var rdb redis.UniversalClient
	n := new(atomic.Int64)
	if len(h.addrs) == 1 {
		rdb = redis.NewClient(&redis.Options{Addr: h.addrs[0]})
	} else {
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: h.addrs})
		cc.OnNewNode(func(c *redis.Client) { c.AddHook(testserver.RoundTripHook{N: n}) }) // one pipeline per master
		rdb = cc
	}
	h.t.Cleanup(func() { _ = rdb.Close() })
	if len(h.addrs) == 1 {
		rdb.AddHook(testserver.RoundTripHook{N: n})
	}
	d, err := redisdlock.NewDriver(rdb, redisdlock.Options{})
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

// MaxBatchRoundTrips: one pipeline per server, and one more where a server
// has lost the cached script. A batch that sends nothing (its context had
// ended) may still see one per server counted: the driver's background
// traffic (queue renewals, late fence raises) lands in the same window.
func (h *countingHarness) MaxBatchRoundTrips(n int) int64 {
	if n == 0 {
		return int64(len(h.addrs))
	}
	return int64(2 * len(h.addrs))
}

func TestBatchRefresher(t *testing.T) {
	srv := testserver.StartRedis(t)
	cluster := testserver.StartRedisCluster(t, 3)
	for name, addrs := range map[string][]string{"server": {srv.Addr()}, "cluster": cluster.Addrs()} {
		t.Run(name, func(t *testing.T) {
			drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return &countingHarness{addrs: addrs, t: t, counts: map[driver.Locker]*atomic.Int64{}}, nil
			})
		})
	}
}

// TestRefreshBatchScriptsAndFaults: with the script cache flushed the batch
// falls back to sending the script's text; with the server gone every
// request fails with ErrUnavailable within the deadline.
func TestRefreshBatchScriptsAndFaults(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	if res, err := d.Acquire(ctx, driver.Request{Key: "held", Token: "t1", TTL: time.Minute}); err != nil || !res.Acquired {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	reqs := []driver.RefreshRequest{
		{Key: "held", Token: "t1", TTL: 2 * time.Minute},
		{Key: "free", Token: "t4", TTL: time.Minute},
	}
	errs := d.RefreshBatch(ctx, reqs)
	want := []error{nil, driver.ErrNotHeld}
	for i := range reqs {
		if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
			t.Errorf("RefreshBatch[%d] (%s/%s) = %v, want %v", i, reqs[i].Key, reqs[i].Token, errs[i], want[i])
		}
	}
	if pttl := rdb.PTTL(ctx, "held").Val(); pttl < time.Minute+50*time.Second {
		t.Errorf("PTTL of the refreshed lock = %v, want about 2m", pttl)
	}
	srv.Kill()
	errs = d.RefreshBatch(testCtx(t, time.Second), reqs)
	for i, err := range errs {
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("RefreshBatch[%d] with the server down = %v, want ErrUnavailable", i, err)
		}
	}
}
