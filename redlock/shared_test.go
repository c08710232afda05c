package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/redlock"
)

// TestSharedQuorum: a shared grant of limit n on N nodes needs the fewest
// nodes q with (n+1)·q > n·N, more than half; readers (no limit) a
// majority.
func TestSharedQuorum(t *testing.T) {
	for _, tc := range []struct{ nodes, limit, want int }{
		{5, 0, 3}, {5, 1, 3}, {5, 2, 4}, {5, 3, 4}, {5, 4, 5}, {5, 100, 5},
		{3, 0, 2}, {3, 1, 2}, {3, 2, 3}, {1, 0, 1}, {1, 5, 1}, {7, 2, 5}, {7, 3, 6}, {9, 2, 7},
	} {
		if got := redlock.SharedQuorum(tc.nodes, tc.limit); got != tc.want {
			t.Errorf("SharedQuorum(%d nodes, limit %d) = %d, want %d", tc.nodes, tc.limit, got, tc.want)
		}
	}
	for n := 1; n <= 15; n++ {
		for limit := 1; limit <= 40; limit++ {
			q := redlock.SharedQuorum(n, limit)
			if (limit+1)*q <= limit*n || (limit+1)*(q-1) > limit*n || 2*q <= n || q > n {
				t.Errorf("SharedQuorum(%d, %d) = %d: not the fewest nodes with (limit+1)·q > limit·N, or not a majority", n, limit, q)
			}
		}
	}
}

// block makes node i refuse every grant of key: a lock of another library
// (a plain SET NX) on it.
func block(t *testing.T, ctx context.Context, c *redis.Client, key string) func() {
	t.Helper()
	if err := c.Set(ctx, key, "elsewhere", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	return func() {
		if err := c.Del(ctx, key).Err(); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
}

// TestSemaphoreQuorum: on 5 nodes a permit of a limit-2 semaphore needs 4
// nodes: with two nodes refusing it is not granted, while a reader and a
// limit-1 permit (a majority each) are; with one refusing it is. Permits
// taken while one node was out do not let a third in when another node is
// out instead: the two quorums overlap on a node that has both.
func TestSemaphoreQuorum(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 30*time.Second)
	cs := rawClients(t, nodes)
	c, d := newClient(t, nodes, redlock.Options{})
	share := func(key, token string, limit int) driver.Result {
		t.Helper()
		res, err := d.AcquireShared(ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: 10 * time.Second}, Limit: limit})
		if err != nil {
			t.Fatalf("AcquireShared(%s, limit %d): %v", token, limit, err)
		}
		return res
	}

	un3, un4 := block(t, ctx, cs[3], "sem"), block(t, ctx, cs[4], "sem")
	if res := share("sem", "a", 2); res.Acquired {
		t.Fatal("a limit-2 permit was granted by 3 of 5 nodes, want 4 needed")
	}
	for i, c := range cs[:3] {
		// The give-back runs in the background.
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			n, err := c.Exists(ctx, shareKey(d, i, "sem")).Result()
			if err == nil && n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d keeps the refused permit's grant (%d, %v); want it given back", i, n, err)
			}
		}
	}
	if res := share("sem", "r", 0); !res.Acquired {
		t.Error("a reader was refused by 2 of 5 nodes, want a majority enough")
	}
	if err := d.Release(ctx, "sem", "r"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if res := share("sem", "m", 1); !res.Acquired {
		t.Error("a limit-1 permit was refused by 2 of 5 nodes, want a majority enough")
	}
	if err := d.Release(ctx, "sem", "m"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	un3()
	a, b := share("sem", "a", 2), share("sem", "b", 2)
	if !a.Acquired || !b.Acquired {
		t.Fatalf("limit-2 permits with 4 of 5 nodes up = %+v, %+v; want both granted", a, b)
	}
	h, err := c.Holders(ctx, "sem")
	if err != nil || len(h.Holders) != 2 || h.Limit != 2 {
		t.Errorf("Holders = %+v, %v; want 2 permits, limit 2", h, err)
	}
	// Node 4 comes back empty, node 0 goes: nodes 1-3 have both permits.
	un4()
	un0 := block(t, ctx, cs[0], "sem")
	if res := share("sem", "c", 2); res.Acquired {
		t.Error("a third permit of a limit-2 semaphore was granted")
	}
	un0()
	if err := d.Refresh(ctx, "sem", "a", 10*time.Second); err != nil {
		t.Errorf("Refresh of a permit held on 4 nodes: %v", err)
	}
	// A permit that only 3 nodes still hold (a majority, not its quorum)
	// is lost at its refresh.
	for _, i := range []int{0, 1} {
		if err := cs[i].ZRem(ctx, shareKey(d, i, "sem"), "b").Err(); err != nil {
			t.Fatalf("ZREM: %v", err)
		}
	}
	if err := d.Refresh(ctx, "sem", "b", 10*time.Second); err == nil {
		t.Error("Refresh of a limit-2 permit held on 3 of 5 nodes succeeded, want it lost")
	}
	errs := d.RefreshBatch(ctx, []driver.RefreshRequest{{Key: "sem", Token: "a", TTL: 10 * time.Second}, {Key: "sem", Token: "b", TTL: 10 * time.Second}})
	if errs[0] != nil || errs[1] == nil {
		t.Errorf("RefreshBatch = %v; want a refreshed, b lost", errs)
	}
}

// shareKey returns the Redis key of key's shared grants on node i.
func shareKey(d *redlock.Driver, i int, key string) string {
	shares, _, _, _ := d.Nodes()[i].SharedKeys(key)
	return shares
}

// TestRWQuorum: readers and a writer exclude each other with majorities
// that overlap; a writer refused because of readers is recorded as waiting
// and holds new readers back.
func TestRWQuorum(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 30*time.Second)
	cs := rawClients(t, nodes)
	c, _ := newClient(t, nodes, redlock.Options{})
	w, _ := newClient(t, nodes, redlock.Options{})
	un := block(t, ctx, cs[0], "rw")
	r, err := c.RWMutex("rw").TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock with one node out: %v", err)
	}
	un()
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = w.RWMutex("rw").Lock(wctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("writer's Lock beside a reader = %v, want DeadlineExceeded", err)
	}
	if _, err := w.RWMutex("rw").TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("writer's TryLock beside a reader = %v, want ErrNotAcquired", err)
	}
	if err := r.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	l, err := w.RWMutex("rw").TryLock(ctx)
	if err != nil {
		t.Fatalf("writer's TryLock after the reader: %v", err)
	}
	if _, err := c.RWMutex("rw").TryRLock(ctx); err == nil {
		t.Fatal("TryRLock beside a writer succeeded")
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("writer's Unlock: %v", err)
	}
}

// TestPermitsBounded: the driver's record of the permits it has not
// released (whose Release waits for every node) drops permits whose lease
// has passed, so permits that are lost and never released do not pile up.
func TestPermitsBounded(t *testing.T) {
	nodes := startNodes(t, 3)
	ctx := testCtx(t, 60*time.Second)
	_, d := newClient(t, nodes, redlock.Options{})
	for round := 0; round < 3; round++ {
		if round > 0 {
			time.Sleep(1300 * time.Millisecond) // the last round's leases (and the grace) pass
		}
		for i := 0; i < 100; i++ {
			req := driver.SharedRequest{Request: driver.Request{Key: fmt.Sprintf("p%d-%d", round, i), Token: "t", TTL: 200 * time.Millisecond}, Limit: 1}
			if _, err := d.AcquireShared(ctx, req); err != nil {
				t.Fatalf("AcquireShared: %v", err)
			}
		}
	}
	if n := d.Permits(); n > 128 {
		t.Errorf("%d permits recorded after 300 never released, 100 of them recent; want at most 128", n)
	}
	req := driver.SharedRequest{Request: driver.Request{Key: "kept", Token: "t", TTL: time.Minute}, Limit: 1}
	if res, err := d.AcquireShared(ctx, req); err != nil || !res.Acquired {
		t.Fatalf("AcquireShared = %+v, %v", res, err)
	}
	before := d.Permits()
	if err := d.Release(ctx, "kept", "t"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if n := d.Permits(); n != before-1 {
		t.Errorf("after Release: %d permits recorded, want %d", n, before-1)
	}
}
