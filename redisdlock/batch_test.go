package redisdlock_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

func TestBatchRefresher(t *testing.T) {
	srv := testserver.StartRedis(t)
	cluster := testserver.StartRedisCluster(t, 3)
	for name, addrs := range map[string][]string{"server": {srv.Addr()}, "cluster": cluster.Addrs()} {
		t.Run(name, func(t *testing.T) {
			drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return &redistest.CountingHarness{Servers: len(addrs), New: func(_ context.Context, n *atomic.Int64) (driver.Locker, error) {
					var rdb redis.UniversalClient
					if len(addrs) == 1 {
						rdb = redis.NewClient(&redis.Options{Addr: addrs[0]})
						rdb.AddHook(testserver.RoundTripHook{N: n})
					} else {
						cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
						cc.OnNewNode(func(c *redis.Client) { c.AddHook(testserver.RoundTripHook{N: n}) }) // one pipeline per master
						rdb = cc
					}
					t.Cleanup(func() { _ = rdb.Close() })
					return redisdlock.NewDriver(rdb, redisdlock.Options{})
				}}, nil
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
