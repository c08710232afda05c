package zkdlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// batchHarness counts the requests the server received (srvr's
// "Received", less the srvr requests themselves).
type batchHarness struct {
	harness
	t *testing.T
	z *testserver.ZooKeeper

	mu    sync.Mutex
	srvrs int
}

func (h *batchHarness) RoundTrips(driver.Locker) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := serverRequests(h.t, h.z) - h.srvrs
	h.srvrs++
	return int64(n)
}

// MaxBatchRoundTrips: one multi, and a ping of each of the suite's two
// sessions that may slip in.
func (h *batchHarness) MaxBatchRoundTrips(n int) int64 {
	if n == 0 {
		return 2
	}
	return 3
}

func TestBatchRefresher(t *testing.T) {
	z := startStandalone(t)
	url := "zk://" + z.Addr() + "/batch?session_timeout=10s"
	drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &batchHarness{harness: harness{url: url, shortTTL: 300 * time.Millisecond}, t: t, z: z}, nil
	})
}

// TestRefreshBatchNodes: a lock whose node another client deleted is lost
// (ErrNotHeld, forgotten), the others' leases run from the refresh, and a
// TTL change is written to the node as Refresh writes it.
func TestRefreshBatchNodes(t *testing.T) {
	z := startStandalone(t)
	d := openDriver(t, "zk://"+z.Addr()+"/batch?session_timeout=10s")
	observer := connect(t, z.Addrs(), 10*time.Second, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, k := range []string{"held", "ttl", "deleted"} {
		if res, err := d.Acquire(ctx, driver.Request{Key: k, Token: "t", TTL: 5 * time.Second}); err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v", k, res, err)
		}
	}
	if err := observer.Delete(d.lookup("deleted", "t").n.path, -1); err != nil { // the default ACL lets anyone
		t.Fatalf("deleting the node from another client: %v", err)
	}
	before := time.Now()
	errs := d.RefreshBatch(ctx, []driver.RefreshRequest{
		{Key: "held", Token: "t", TTL: 5 * time.Second},
		{Key: "deleted", Token: "t", TTL: 5 * time.Second},
		{Key: "ttl", Token: "t", TTL: 8 * time.Second},
	})
	if errs[0] != nil || !errors.Is(errs[1], driver.ErrNotHeld) || errs[2] != nil {
		t.Fatalf("RefreshBatch = %v, want [nil ErrNotHeld nil]", errs)
	}
	if d.lookup("deleted", "t") != nil {
		t.Error("deleted: still held after its node was deleted")
	}
	for k, want := range map[string]time.Duration{"held": 5 * time.Second, "ttl": 8 * time.Second} {
		h := d.lookup(k, "t")
		d.mu.Lock()
		expires, ttl := h.expires, h.ttl
		d.mu.Unlock()
		if ttl != want || expires.Before(before.Add(want)) {
			t.Errorf("%s: lease ttl %v, expires in %v, want %v from the refresh", k, ttl, time.Until(expires).Round(time.Millisecond), want)
		}
	}
	data, _, err := observer.Get(d.lookup("ttl", "t").n.path)
	if err != nil {
		t.Fatal(err)
	}
	if ttl, _, ok := decodeData(data); !ok || ttl != 8*time.Second {
		t.Errorf("node data TTL after the batch = %v (ok %v), want 8s", ttl, ok)
	}
}
