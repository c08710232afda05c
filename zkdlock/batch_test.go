package zkdlock

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// TestRefreshBatch: one RefreshBatch call answers each lock as Refresh
// would — held, released, deleted by another client, held by another
// client, never held, TTL changed, TTL too long — in order, and a batch of
// held locks costs one request.
func TestRefreshBatch(t *testing.T) {
	z := startStandalone(t)
	url := "zk://" + z.Addr() + "/batch?session_timeout=10s"
	d := openDriver(t, url)
	other := openDriver(t, url)
	observer := connect(t, z.Addrs(), 10*time.Second, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	take := func(d *zkDriver, key, token string) *holding {
		t.Helper()
		res, err := d.Acquire(ctx, driver.Request{Key: key, Token: token, TTL: 5 * time.Second})
		if err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v", key, res, err)
		}
		return d.lookup(key, token)
	}
	for _, k := range []string{"held1", "held2", "held3", "held4", "ttl", "released"} {
		take(d, k, "t")
	}
	if err := d.Release(ctx, "released", "t"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"deleted1", "deleted2"} {
		h := take(d, k, "t")
		if err := observer.Delete(h.n.path, -1); err != nil { // the default ACL lets anyone
			t.Fatalf("deleting %s from another client: %v", h.n.path, err)
		}
	}
	take(other, "foreign", "o")

	reqs := []driver.RefreshRequest{
		{Key: "held1", Token: "t", TTL: 5 * time.Second},
		{Key: "deleted1", Token: "t", TTL: 5 * time.Second},
		{Key: "held2", Token: "t", TTL: 5 * time.Second},
		{Key: "released", Token: "t", TTL: 5 * time.Second},
		{Key: "ttl", Token: "t", TTL: 8 * time.Second},
		{Key: "foreign", Token: "o", TTL: 5 * time.Second},
		{Key: "foreign", Token: "t", TTL: 5 * time.Second},
		{Key: "deleted2", Token: "t", TTL: 5 * time.Second},
		{Key: "held3", Token: "t", TTL: 5 * time.Second},
		{Key: "held4", Token: "t", TTL: time.Minute},
		{Key: "never", Token: "t", TTL: 5 * time.Second},
		{Key: "held4", Token: "t", TTL: 5 * time.Second},
	}
	want := []error{nil, driver.ErrNotHeld, nil, driver.ErrNotHeld, nil, driver.ErrNotHeld, driver.ErrNotHeld,
		driver.ErrNotHeld, nil, driver.ErrInvalidTTL, driver.ErrNotHeld, nil}
	before := time.Now()
	errs := d.RefreshBatch(ctx, reqs)
	if len(errs) != len(reqs) {
		t.Fatalf("RefreshBatch returned %d errors, want %d", len(errs), len(reqs))
	}
	for i := range reqs {
		if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
			t.Errorf("RefreshBatch[%d] (%s/%s) = %v, want %v", i, reqs[i].Key, reqs[i].Token, errs[i], want[i])
		}
	}
	// The passed locks' leases run from now; the lost ones are forgotten.
	for _, k := range []string{"held1", "held2", "held3", "held4", "ttl"} {
		h := d.lookup(k, "t")
		if h == nil {
			t.Fatalf("%s: no longer held after a passed refresh", k)
		}
		d.mu.Lock()
		expires, ttl := h.expires, h.ttl
		d.mu.Unlock()
		if wantTTL := map[bool]time.Duration{true: 8 * time.Second, false: 5 * time.Second}[k == "ttl"]; ttl != wantTTL || expires.Before(before.Add(wantTTL)) {
			t.Errorf("%s: lease ttl %v, expires in %v, want %v from the refresh", k, ttl, time.Until(expires).Round(time.Millisecond), wantTTL)
		}
	}
	for _, k := range []string{"deleted1", "deleted2"} {
		if d.lookup(k, "t") != nil {
			t.Errorf("%s: still held after its node was deleted", k)
		}
	}
	// The TTL change is written to the node, as Refresh writes it.
	data, _, err := observer.Get(d.lookup("ttl", "t").n.path)
	if err != nil {
		t.Fatal(err)
	}
	if ttl, _, ok := decodeData(data); !ok || ttl != 8*time.Second {
		t.Errorf("node data TTL after the batch = %v (ok %v), want 8s", ttl, ok)
	}
	// The other client's lock is untouched.
	if err := other.Refresh(ctx, "foreign", "o", 5*time.Second); err != nil {
		t.Errorf("the other client's Refresh after the batch: %v", err)
	}

	// A batch of held locks is one request (srvr adds one).
	var held []driver.RefreshRequest
	for i := range 200 {
		k := "many/" + strconv.Itoa(i)
		take(d, k, "t")
		held = append(held, driver.RefreshRequest{Key: k, Token: "t", TTL: 5 * time.Second})
	}
	r0 := serverRequests(t, z)
	for i, err := range d.RefreshBatch(ctx, held) {
		if err != nil {
			t.Fatalf("RefreshBatch[%d] of held locks: %v", i, err)
		}
	}
	if n := serverRequests(t, z) - r0 - 1; n > 2 { // a ping may slip in
		t.Errorf("a batch of %d held locks cost %d requests, want 1", len(held), n)
	}

	// Some deleted among many: exactly those are lost, for a few more
	// multis.
	var gone []bool
	for i := range held {
		gone = append(gone, i%23 == 5)
		if gone[i] {
			if err := observer.Delete(d.lookup(held[i].Key, "t").n.path, -1); err != nil {
				t.Fatal(err)
			}
		}
	}
	r0 = serverRequests(t, z)
	errs = d.RefreshBatch(ctx, held)
	r1 := serverRequests(t, z) - r0 - 1
	lost := 0
	for i, err := range errs {
		if gone[i] {
			lost++
			if !errors.Is(err, driver.ErrNotHeld) {
				t.Errorf("RefreshBatch[%d] of a deleted lock = %v, want ErrNotHeld", i, err)
			}
		} else if err != nil {
			t.Errorf("RefreshBatch[%d] of a held lock = %v, want nil", i, err)
		}
	}
	t.Logf("%d locks, %d deleted by another client: %d requests", len(held), lost, r1)
	if r1 >= len(held)/2 {
		t.Errorf("the batch with %d deleted locks cost %d requests, want far fewer than one per lock (%d)", lost, r1, len(held))
	}

	// A cancelled context: every lock fails with it, and stays held.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	for i, err := range d.RefreshBatch(cctx, reqs[:3]) {
		if !errors.Is(err, context.Canceled) && !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("RefreshBatch[%d] with a cancelled context = %v, want context.Canceled", i, err)
		}
	}
	if d.lookup("held1", "t") == nil {
		t.Error("held1 dropped by a cancelled batch")
	}
	_ = d.Close()
	for i, err := range d.RefreshBatch(ctx, reqs[:2]) {
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("RefreshBatch[%d] after Close = %v, want ErrClosed", i, err)
		}
	}
}

// TestManyLocksRefreshInBatches: a client holding 2000 locks with
// auto-refresh keeps them all, for a few requests per refresh interval
// instead of one per lock.
func TestManyLocksRefreshInBatches(t *testing.T) {
	z := startStandalone(t)
	const (
		n    = 2000
		ttl  = 2 * time.Second
		hold = 4 * time.Second
	)
	c := openClient(t, "zk://"+z.Addr()+"/batch-many?session_timeout=3s", dlock.WithLockDefaults(dlock.WithTTL(ttl)))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	locks := make([]*dlock.Lock, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				l, err := c.TryLock(ctx, "k/"+strconv.Itoa(i))
				if err != nil {
					errs <- err
					return
				}
				locks[i] = l
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("TryLock: %v", err)
	}
	r0 := serverRequests(t, z)
	time.Sleep(hold)
	requests := serverRequests(t, z) - r0 - 1
	for i, l := range locks {
		if err := l.Err(); err != nil {
			t.Fatalf("lock %d lost while refreshed in batches: %v", i, err)
		}
	}
	// The nodes are there: a fresh reader sees each key held.
	for _, i := range []int{0, n / 2, n - 1} {
		info, err := c.Inspect(ctx, "k/"+strconv.Itoa(i))
		if err != nil || !info.Held || info.Fence != locks[i].Fence() {
			t.Errorf("Inspect(k/%d) = %+v, %v; want held with fence %d", i, info, err, locks[i].Fence())
		}
	}
	perLock := n * int(hold/(ttl/3))
	t.Logf("%d locks held %v with TTL %v: %d requests (one per lock per TTL/3 would be %d)", n, hold, ttl, requests, perLock)
	if requests > perLock/50 {
		t.Errorf("%d requests to refresh %d locks for %v, want far fewer than %d", requests, n, hold, perLock)
	}
}
