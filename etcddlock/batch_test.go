package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// batchHarness makes drivers over clients whose unary calls and streams
// opened it counts as round trips. Keep-alive messages on the open stream
// are pipelined, one per lease: locks taken at the driver level without the
// Client's auto-refresh have a lease each, so they are not counted here;
// TestManyHeldLocks checks that a Client's locks share leases and cost a
// keep-alive per refresh round.
type batchHarness struct {
	harness
	t   *testing.T
	srv *testserver.Etcd

	mu       sync.Mutex
	counters map[driver.Locker]*rpcCounter
}

func (h *batchHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	counter := newRPCCounter()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: h.srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), DialOptions: counter.dialOptions(),
	})
	if err != nil {
		return nil, err
	}
	h.t.Cleanup(func() { _ = cli.Close() })
	d, err := NewDriver(cli, Options{})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.counters[d] = counter
	h.mu.Unlock()
	return d, nil
}

func (h *batchHarness) RoundTrips(d driver.Locker) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	calls, _, _ := h.counters[d].snapshot()
	return int64(calls)
}

// MaxBatchRoundTrips: a transaction per defaultTxnOps checks, and a few
// lease calls (a grant for a new TTL, a keep-alive stream reopened).
func (h *batchHarness) MaxBatchRoundTrips(n int) int64 {
	if n == 0 {
		return 0
	}
	return int64((n+defaultTxnOps-1)/defaultTxnOps) + 4
}

func TestBatchRefresher(t *testing.T) {
	srv := testserver.StartEtcd(t)
	drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &batchHarness{t: t, srv: srv, counters: map[driver.Locker]*rpcCounter{}}, nil
	})
}

// TestRefreshBatchEntries: locks whose lease was revoked, whose key was
// deleted or overwritten without a lease are lost (and stay lost in a
// second batch); a held lock's lease is confirmed by the batch;
// a longer TTL moves a lock to a longer lease.
func TestRefreshBatchEntries(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 30*time.Second)
	d := ownDriver(t, ctx, "etcd://"+srv.Addr())
	const ttl = 2 * time.Second
	for _, k := range []string{"held", "revoked", "deleted", "replaced", "longer"} {
		if res, err := d.Acquire(ctx, driver.Request{Key: k, Token: "t-" + k, TTL: ttl}); err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v; want acquired", k, res, err)
		}
	}
	if _, err := raw.Revoke(ctx, d.lookup("revoked", "t-revoked").lease.id); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Delete(ctx, d.lookup("deleted", "t-deleted").name); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Put(ctx, d.lookup("replaced", "t-replaced").name, "x"); err != nil { // no lease now
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // so that a renewal is visible
	var reqs []driver.RefreshRequest
	for _, k := range []string{"held", "revoked", "deleted", "replaced", "longer"} {
		reqs = append(reqs, driver.RefreshRequest{Key: k, Token: "t-" + k, TTL: map[bool]time.Duration{true: 2 * ttl, false: ttl}[k == "longer"]})
	}
	sent := time.Now()
	errs := d.RefreshBatch(ctx, reqs)
	for i, r := range reqs {
		if held := r.Key == "held" || r.Key == "longer"; held != (errs[i] == nil) || !held && !errors.Is(errs[i], driver.ErrNotHeld) {
			t.Errorf("%s: got %v, want held %v", r.Key, errs[i], held)
		}
	}
	if c := d.lookup("held", "t-held").lease.confirmedAt(); c.Before(sent) {
		t.Errorf("held lock's lease confirmed at %v, before the batch was sent (%v)", c, sent)
	}
	if l := d.lookup("longer", "t-longer").lease; l.sec != leaseSeconds(2*ttl) {
		t.Errorf("lease of the lock refreshed with a longer TTL: %d s, want %d s", l.sec, leaseSeconds(2*ttl))
	}
	for i, err := range d.RefreshBatch(ctx, reqs[1:4]) {
		if !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("second batch, %s: got %v, want ErrNotHeld", reqs[1+i].Key, err)
		}
	}
}

// TestRefreshBatchTxnOps: with a server limit on operations per transaction
// below the driver's default, the checks are split and still answered.
func TestRefreshBatchTxnOps(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	d := ownDriver(t, ctx, "etcd://"+srv.Addr())
	const n = 300
	reqs := make([]driver.RefreshRequest, n)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: fmt.Sprintf("ops/%d", i), Token: fmt.Sprint("t", i), TTL: 2 * time.Second}
		if res, err := d.Acquire(ctx, driver.Request{Key: reqs[i].Key, Token: reqs[i].Token, TTL: reqs[i].TTL}); err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v", reqs[i].Key, res, err)
		}
	}
	// The server refuses more than 128 operations; make the driver believe
	// in more, as if the server had a lower limit than it expects.
	d.txnOps.Store(n)
	for i, err := range d.RefreshBatch(ctx, reqs) {
		if err != nil {
			t.Fatalf("request %d: got %v, want nil", i, err)
		}
	}
	if got := d.txnOps.Load(); got > defaultTxnOps {
		t.Errorf("operations per transaction after a refusal: %d, want <= %d", got, defaultTxnOps)
	}
}

// TestRefreshBatchFaults: a stuck or dead server fails the whole batch with
// ErrUnavailable by the deadline, and the next batch works again.
func TestRefreshBatchFaults(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ctx := testCtx(t, 60*time.Second)
	d := ownDriver(t, ctx, "etcd://"+srv.Addr()+"?request-timeout=500ms")
	const ttl = 10 * time.Second
	reqs := make([]driver.RefreshRequest, 5)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: fmt.Sprintf("fault/%d", i), Token: fmt.Sprint("t", i), TTL: ttl}
		if res, err := d.Acquire(ctx, driver.Request{Key: reqs[i].Key, Token: reqs[i].Token, TTL: ttl}); err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v", reqs[i].Key, res, err)
		}
	}
	batch := func(step string, wantErr bool) {
		t.Helper()
		bctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		start := time.Now()
		errs := d.RefreshBatch(bctx, reqs)
		if took := time.Since(start); took > 3*time.Second+500*time.Millisecond {
			t.Errorf("%s: returned after %v, want within the 3s deadline", step, took)
		}
		for i, err := range errs {
			switch {
			case !wantErr && err != nil:
				t.Errorf("%s, request %d: got %v, want nil", step, i, err)
			case wantErr && (!errors.Is(err, driver.ErrUnavailable) || !strings.Contains(err.Error(), srv.Addr())):
				t.Errorf("%s, request %d: got %v, want ErrUnavailable naming %s", step, i, err, srv.Addr())
			}
		}
	}
	batch("before", false)

	m := srv.Members[0]
	m.Pause()
	batch("server paused", true)
	m.Resume()
	batch("server resumed", false)

	m.Kill()
	batch("server killed", true)
	m.Restart()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := srv.WaitHealthy(wctx, m); err != nil {
		t.Fatal(err)
	}
	// The client reconnects in the background; retry like the watchdog.
	for {
		errs := d.RefreshBatch(wctx, reqs)
		if errs[0] == nil {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("after restart: %v", errs[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
	batch("server restarted", false)
}

// TestManyHeldLocks holds 2000 locks with auto-refresh on one client, TTL
// 2 s, for about 5 s: none may be lost, and the refreshes must cost far
// fewer calls and keep-alive messages than one per lock per refresh
// interval.
func TestManyHeldLocks(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ctx := testCtx(t, 120*time.Second)
	c, counter := countedClient(t, srv)

	const (
		n       = 2000
		ttl     = 2 * time.Second
		hold    = 5 * time.Second
		workers = 16
	)
	locks := make([]*dlock.Lock, n)
	start := time.Now()
	parallel(t, n, workers, func(i int) error {
		l, err := c.TryLock(ctx, fmt.Sprintf("many/%d", i), dlock.WithTTL(ttl))
		locks[i] = l
		return err
	})
	took := time.Since(start)
	calls0, msgs0, by0 := counter.snapshot()
	t.Logf("took %d locks in %v (%.0f/s), %d calls %v", n, took.Round(time.Millisecond), n/took.Seconds(), calls0, by0)

	time.Sleep(hold)

	calls1, msgs1, by1 := counter.snapshot()
	lost := 0
	for _, l := range locks {
		if l.Err() != nil {
			lost++
		}
	}
	if lost != 0 {
		t.Errorf("%d of %d locks lost while held for %v, want 0", lost, n, hold)
	}
	perLock := int(float64(n) * hold.Seconds() / (ttl / 3).Seconds()) // one call per lock per TTL/3
	calls := calls1 - calls0
	t.Logf("held %d locks for %v: %d calls (%v), %d keep-alive messages on streams; one call per lock per TTL/3 would be %d",
		n, hold, calls, diff(by1, by0), msgs1-msgs0, perLock)
	if calls > perLock/20 {
		t.Errorf("%d calls while holding, want far fewer than one per lock per TTL/3 (%d)", calls, perLock)
	}
	// The locks share one lease: a keep-alive per refresh round (per
	// RefreshBatch call at most), not one per lock.
	if msgs := msgs1 - msgs0; msgs > int64(perLock/20) {
		t.Errorf("%d keep-alives sent while holding %d locks for %v, want far fewer than one per lock per TTL/3 (%d)", msgs, n, hold, perLock)
	}

	parallel(t, n, workers, func(i int) error { return locks[i].Unlock(ctx) })
	raw := rawClient(t, srv.Endpoints())
	resp, err := raw.Get(ctx, "/dlock/many", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d entries left after Unlock, want 0", resp.Count)
	}
}
