package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestRefreshBatch checks each result of one RefreshBatch call over locks
// in different states.
func TestRefreshBatch(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 30*time.Second)
	dl, err := OpenDriver(ctx, "etcd://"+srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dl.Close() })
	d := dl.(*etcdDriver)
	other, err := OpenDriver(ctx, "etcd://"+srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })

	const ttl = 2 * time.Second
	acquire := func(drv driver.Locker, key, token string) {
		t.Helper()
		res, err := drv.Acquire(ctx, driver.Request{Key: key, Token: token, TTL: ttl})
		if err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v; want acquired", key, res, err)
		}
	}
	entryOf := func(key, token string) *entry {
		t.Helper()
		e := d.lookup(key, token)
		if e == nil {
			t.Fatalf("no entry for %q", key)
		}
		return e
	}

	acquire(d, "b/held", "t-held")
	acquire(d, "b/held2", "t-held2")
	acquire(d, "b/released", "t-released")
	if err := d.Release(ctx, "b/released", "t-released"); err != nil {
		t.Fatal(err)
	}
	acquire(d, "b/revoked", "t-revoked")
	if _, err := raw.Revoke(ctx, entryOf("b/revoked", "t-revoked").lease.id); err != nil {
		t.Fatal(err)
	}
	acquire(d, "b/deleted", "t-deleted")
	if _, err := raw.Delete(ctx, entryOf("b/deleted", "t-deleted").name); err != nil {
		t.Fatal(err)
	}
	acquire(d, "b/replaced", "t-replaced")
	if _, err := raw.Put(ctx, entryOf("b/replaced", "t-replaced").name, "x"); err != nil { // no lease now
		t.Fatal(err)
	}
	acquire(other, "b/foreign", "t-foreign")
	acquire(d, "b/longer", "t-longer")

	time.Sleep(300 * time.Millisecond) // so that a renewal is visible
	reqs := []driver.RefreshRequest{
		{Key: "b/held", Token: "t-held", TTL: ttl},
		{Key: "b/released", Token: "t-released", TTL: ttl},
		{Key: "b/revoked", Token: "t-revoked", TTL: ttl},
		{Key: "b/deleted", Token: "t-deleted", TTL: ttl},
		{Key: "b/replaced", Token: "t-replaced", TTL: ttl},
		{Key: "b/foreign", Token: "t-foreign", TTL: ttl}, // held through another client
		{Key: "b/held", Token: "t-other", TTL: ttl},      // wrong token
		{Key: "b/never", Token: "t-never", TTL: ttl},
		{Key: "b/held2", Token: "t-held2", TTL: ttl},
		{Key: "b/held", Token: "t-held", TTL: ttl},         // the same lock again
		{Key: "b/longer", Token: "t-longer", TTL: 2 * ttl}, // moves to a longer lease
	}
	want := []bool{true, false, false, false, false, false, false, false, true, true, true}
	sent := time.Now()
	errs := d.RefreshBatch(ctx, reqs)
	if len(errs) != len(reqs) {
		t.Fatalf("RefreshBatch returned %d results for %d requests", len(errs), len(reqs))
	}
	for i, r := range reqs {
		switch {
		case want[i] && errs[i] != nil:
			t.Errorf("%d %s/%s: got %v, want nil", i, r.Key, r.Token, errs[i])
		case !want[i] && !errors.Is(errs[i], driver.ErrNotHeld):
			t.Errorf("%d %s/%s: got %v, want ErrNotHeld", i, r.Key, r.Token, errs[i])
		}
	}
	if c := entryOf("b/held", "t-held").lease.confirmedAt(); c.Before(sent) {
		t.Errorf("held lock's lease confirmed at %v, before the batch was sent (%v)", c, sent)
	}
	if l := entryOf("b/longer", "t-longer").lease; l.sec != leaseSeconds(2*ttl) {
		t.Errorf("lease of the lock refreshed with a longer TTL: %d s, want %d s", l.sec, leaseSeconds(2*ttl))
	}
	// The lock of the other client is untouched, and ours still work.
	if err := other.Release(ctx, "b/foreign", "t-foreign"); err != nil {
		t.Errorf("other client's Release: %v", err)
	}
	for _, k := range []string{"b/held", "b/held2", "b/longer"} {
		if err := d.Release(ctx, k, "t-"+strings.TrimPrefix(k, "b/")); err != nil {
			t.Errorf("Release(%q): %v", k, err)
		}
	}
	// Locks reported lost are forgotten: a second batch says ErrNotHeld
	// without asking etcd.
	for i, err := range d.RefreshBatch(ctx, reqs[1:5]) {
		if !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("second batch, %s: got %v, want ErrNotHeld", reqs[1+i].Key, err)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	for i, err := range d.RefreshBatch(cctx, reqs[:2]) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled ctx, request %d: got %v, want context.Canceled", i, err)
		}
	}
}

// TestRefreshBatchTxnOps: with a server limit on operations per transaction
// below the driver's default, the checks are split and still answered.
func TestRefreshBatchTxnOps(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	dl, err := OpenDriver(ctx, "etcd://"+srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dl.Close() })
	d := dl.(*etcdDriver)
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
	dl, err := OpenDriver(ctx, "etcd://"+srv.Addr()+"?request-timeout=500ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dl.Close() })
	d := dl.(*etcdDriver)
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

// rpcCounter counts the client's gRPC calls by method: unary calls,
// streams opened and messages sent on streams.
type rpcCounter struct {
	mu      sync.Mutex
	unary   map[string]int
	streams map[string]int
	sent    atomic.Int64 // messages sent on streams
}

// countedClient opens a dlock Client over a clientv3 client of srv whose
// calls and stream messages counter counts; both close when the test ends.
func countedClient(t *testing.T, srv *testserver.Etcd) (*dlock.Client, *rpcCounter) {
	t.Helper()
	counter := newRPCCounter()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: counter.dialOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	c, err := NewClient(cli, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, counter
}

func newRPCCounter() *rpcCounter {
	return &rpcCounter{unary: map[string]int{}, streams: map[string]int{}}
}

func (c *rpcCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.mu.Lock()
			c.unary[method]++
			c.mu.Unlock()
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			c.mu.Lock()
			c.streams[method]++
			c.mu.Unlock()
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &countingStream{ClientStream: s, sent: &c.sent}, nil
		}),
	}
}

// snapshot returns the number of unary calls plus streams opened, and
// stream messages sent, so far.
func (c *rpcCounter) snapshot() (calls int, msgs int64, byMethod map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byMethod = map[string]int{}
	for m, n := range c.unary {
		calls += n
		byMethod[m[strings.LastIndex(m, "/")+1:]] += n
	}
	for m, n := range c.streams {
		calls += n
		byMethod[m[strings.LastIndex(m, "/")+1:]+"(stream)"] += n
	}
	return calls, c.sent.Load(), byMethod
}

type countingStream struct {
	grpc.ClientStream
	sent *atomic.Int64
}

func (s *countingStream) SendMsg(m any) error {
	s.sent.Add(1)
	return s.ClientStream.SendMsg(m)
}

func diff(after, before map[string]int) map[string]int {
	d := map[string]int{}
	for m, n := range after {
		if n != before[m] {
			d[m] = n - before[m]
		}
	}
	return d
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

// parallel runs f(0..n-1) on workers goroutines and fails the test on the
// first error.
func parallel(t *testing.T, n, workers int, f func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = fmt.Errorf("item %d: %w", i, err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}
