package drivertest

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// The fault scenarios break the server in one of five ways. A harness
// offers a way by implementing its interface; RunFaultTests skips the
// scenarios of the ways it does not offer. Each method restores what it
// broke by the time the subtest ends, so that one server can serve every
// scenario, one after another.

// RestartHarness is a Harness whose server can crash and start again.
type RestartHarness interface {
	Harness
	// Addr returns the server's address ("host:port"), or the addresses
	// of all its servers separated by commas; every error of a driver must
	// name one of them while the server is down.
	Addr() string
	// Kill stops the server at once, as a crash would, and returns when it
	// is gone. Its data stay where a restart finds them.
	Kill(t testing.TB)
	// Restart kills the server if it runs and starts it again on the same
	// address with its data, as after a crash, and returns when it accepts
	// connections.
	Restart(t testing.TB)
}

// ConnKillHarness is a Harness that can end the drivers' connections from
// the server's side while the server keeps running, as an operator's kill
// or a proxy failover would.
type ConnKillHarness interface {
	Harness
	// KillConnections ends every connection the harness's drivers have open
	// to the server and returns how many it ended.
	KillConnections(t testing.TB) int
}

// BlackholeHarness is a Harness with a TCP proxy in front of the server
// (internal/testserver's Proxy, or one like it) that can stop forwarding,
// as a network partition would.
type BlackholeHarness interface {
	Harness
	// MakeProxiedDriver returns a new driver as MakeDriver does, but
	// connected through the proxy. Drivers from MakeDriver reach the server
	// directly and are not cut off.
	MakeProxiedDriver(ctx context.Context) (driver.Locker, error)
	// ProxyAddr returns the proxy's address ("host:port"), or those of
	// all the proxies separated by commas where each server has its own;
	// the errors of a proxied driver must name one of them while it is cut
	// off.
	ProxyAddr() string
	// Blackhole makes the proxy forward nothing in either direction, for
	// open and new connections alike, until heal is called; what was held
	// back flows again then. heal is safe to call more than once; the
	// harness calls it when t ends at the latest.
	Blackhole(t testing.TB) (heal func())
}

// PauseHarness is a Harness whose server process can be stopped with
// SIGSTOP: it keeps its sockets (connections stay open) but answers nothing,
// as a server in a long GC pause or swapped out would.
type PauseHarness interface {
	Harness
	// Pause stops every process of the server until resume is called
	// (SIGCONT). resume is safe to call more than once; the harness calls it
	// when t ends at the latest.
	Pause(t testing.TB) (resume func())
}

// RunFaultTests runs the fault scenarios against a backend whose server the
// harness can break. The harnesses newHarness makes implement one or more
// of RestartHarness, ConnKillHarness, BlackholeHarness, LatencyHarness,
// PauseHarness and ProcessHarness;
// the scenarios of the interfaces a harness lacks are skipped, saying
// which. Call it with a server started for it alone, as the scenarios stop,
// cut off and restart it (one after another, never in parallel):
//
//	func TestFaults(t *testing.T) {
//		srv := startServer(t) // a real backend of its own
//		drivertest.RunFaultTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
//			return &faultHarness{srv: srv}, nil
//		})
//	}
//
// The scenarios, each with a deadline of 90 s:
//
//   - RestartLeaseLapses: a lock with a 1 s TTL is held when the server is
//     killed. Its Done closes and Err matches dlock.ErrLost; another
//     Client's TryLock fails with an error matching dlock.ErrUnavailable
//     that names the server's address. After the restart another Client's
//     Lock takes the key within 15 s (at once where the lease ran out
//     while the server was down, a TTL later where the server extends
//     leases when it starts, as etcd does) with a higher fence (the
//     counter survives).
//   - RestartLeaseSurvives: a lock with a 20 s TTL is held across a quick
//     restart. Refresh succeeds after it (retried while it fails with
//     ErrUnavailable: a pool may first meet connections it has not yet found
//     dead); Inspect shows it held with its fence, and another owner cannot
//     take it.
//   - ConnectionsKilled: the holder's connections (TTL 2 s,
//     auto-refresh) are ended three times, 1.5 TTLs apart. The driver
//     reconnects, the lock is never lost and Inspect shows it with its
//     fence.
//   - BlackholeLost: a lock (TTL 1 s, auto-refresh) is held through the
//     proxy when it stops forwarding. Another Client, reaching the server
//     directly, polls the key; when it gets it, the first lock's Done has
//     already closed (Err matches ErrLost), and the new fence is higher.
//     After the partition heals, the cut-off Client takes a lock again.
//   - BlackholeDeadline: TryLock through the partition with a 300 ms
//     context returns within 3 s, with an error matching
//     context.DeadlineExceeded.
//   - BlackholeBatch, for a driver.BatchRefresher: RefreshBatch through the
//     partition with a 300 ms context fails the requests of the keys the
//     driver holds with an error that is not driver.ErrNotHeld and matches
//     context.DeadlineExceeded; that of a key it never held may also fail
//     with ErrNotHeld at once.
//   - BlackholeHeals: a lock (TTL 4 s, or the driver's MaxTTL when shorter;
//     auto-refresh) is held through the proxy while it forwards nothing
//     for a quarter of the TTL; another owner cannot take it meanwhile,
//     and a TTL after the partition it is still held with its fence.
//   - AbandonedAcquire: TryLock through the partition (TTL a minute, or
//     MaxTTL) gives up after 300 ms; once the partition heals, the
//     held-back request may reach the server and be granted, and then the
//     key must be free again within 5 s, not held for its TTL.
//   - LateGrant, for a LatencyHarness: with the proxy delaying each way by
//     3/4 of a 200 ms TTL (or the driver's MinTTL), TryLock must not
//     return a lock (ErrNotAcquired or ErrUnavailable), and another Client
//     takes the key; with 25 ms each way, a 3 s lock is granted, refreshed
//     and released as usual.
//   - SemaphoreBlackhole, for a driver.SharedLocker: of a semaphore of 2,
//     one permit (TTL 1 s) is held through the proxy and one directly; when
//     the proxy stops forwarding, a third client polls for a permit, and
//     when it gets one the cut-off holder's Done has closed (Err matches
//     ErrLost), the direct holder still holds, and the new fence is higher.
//   - DownCallsEnd: with the server killed, the Refresh and Unlock of a
//     held lock, TryLock, Lock, Inspect, and List and ForceUnlock (where
//     the driver has them), each with a 500 ms context, return within 2 s
//     with an error matching dlock.ErrUnavailable that names the server's
//     address.
//   - BlackholeCallsEnd: the same calls through the partition, by a
//     Client that holds a lock through the proxy and by one that never
//     used its connection, with an error matching ErrUnavailable or
//     context.DeadlineExceeded that names the proxy's address.
//   - Pause: a lock (TTL 1 s, auto-refresh) is held when the server is
//     paused. Its Done closes and Err matches ErrLost; another Client's
//     TryLock with a 500 ms context returns within 3 s with an error
//     matching context.DeadlineExceeded. After resume another Client takes
//     the key with a higher fence.
//   - HolderKilled, for a ProcessHarness: the test binary, run again as a
//     child process, takes a lock (TTL 2 s, or the driver's MaxTTL when
//     shorter; auto-refresh) and is killed with SIGKILL halfway through a
//     lease; a waiter gets the key no sooner than the child's last
//     validity deadline, within the TTL plus 1.5 s of the kill, with a
//     higher fence. (RunFaultTests itself plays the child, so the driver's
//     test must call it from a test the child can select by name.)
//   - SemaphoreHolderKilled, for a ProcessHarness and a
//     driver.SharedLocker: the same for one permit of a semaphore of 2,
//     the other held in this process all along; a third client's Acquire
//     gets the crashed holder's permit, and the other permit stays held.
//   - SemaphoreHolderPaused: the same with the child paused (SIGSTOP)
//     instead: the third client gets the permit no sooner than the
//     paused holder's validity deadline, and the child, resumed, reports
//     its permit lost and never a new deadline. With the blackhole of
//     SemaphoreBlackhole, this is the semaphore's fenced oracle: never
//     more valid holders than the limit, under pause, partition and crash.
//   - ReaderKilled: a child holding a read lock (RWMutex) is killed, and a
//     writer waiting in this process gets the key as HolderKilled's waiter
//     does.
//   - ElectionLeaderPaused, for a ProcessHarness: the child is leader of a
//     dlock.Election (TTL as HolderKilled's) and is paused (SIGSTOP) halfway
//     through a lease; a candidate here is elected no sooner than the
//     paused leader's validity deadline, with a higher term; the child,
//     resumed, reports its leadership lost and never a new deadline; a
//     fenced resource (dlock.FenceGuard) takes the new term and refuses
//     the deposed one.
//   - ElectionLeaderKilled: the same with the child killed (SIGKILL): the
//     candidate is elected within the TTL plus 1 s of the kill (ZooKeeper:
//     the child's session, its MaxTTL, plus 1 s).
//   - ElectionBlackhole, for a BlackholeHarness: the leader (TTL 1 s)
//     campaigned through the proxy, a candidate waits on a Client reaching
//     the server directly; when the proxy stops forwarding, the candidate
//     is elected only after the leader's Done closed with ErrLost and its
//     validity deadline passed, with a higher term the fenced resource
//     prefers. After the partition heals and the new leader resigns, the
//     cut-off Client is elected again, with a higher term still.
//   - ElectionRestart, for a RestartHarness: the server is killed while a
//     leader (TTL 1 s) holds; its Done closes with ErrLost, and a candidate
//     campaigning across the outage is elected after the restart, no
//     sooner than the lost leader's validity deadline, with a higher term;
//     a third candidate follows on a resign, higher again.
func RunFaultTests(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	parent := t.Name()
	tests := []struct {
		name string
		fn   func(t *testing.T, f *faults)
	}{
		{"RestartLeaseLapses", testRestartLeaseLapses},
		{"RestartLeaseSurvives", testRestartLeaseSurvives},
		{"ConnectionsKilled", testConnectionsKilled},
		{"BlackholeLost", testBlackholeLost},
		{"BlackholeDeadline", testBlackholeDeadline},
		{"BlackholeBatch", testBlackholeBatch},
		{"BlackholeHeals", testBlackholeHeals},
		{"AbandonedAcquire", testAbandonedAcquire},
		{"LateGrant", testLateGrant},
		{"SemaphoreBlackhole", testSemaphoreBlackhole},
		{"DownCallsEnd", testDownCallsEnd},
		{"BlackholeCallsEnd", testBlackholeCallsEnd},
		{"Pause", testPause},
		{"HolderKilled", testHolderKilled},
		{"SemaphoreHolderKilled", testSemaphoreHolderKilled},
		{"SemaphoreHolderPaused", testSemaphoreHolderPaused},
		{"ReaderKilled", testReaderKilled},
		{"ElectionLeaderPaused", testElectionLeaderPaused},
		{"ElectionLeaderKilled", testElectionLeaderKilled},
		{"ElectionBlackhole", testElectionBlackhole},
		{"ElectionRestart", testElectionRestart},
	}
	if runHolderChild(t) {
		return // the child process of HolderKilled
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &faults{suite: newSuite(t, newHarness, 90*time.Second), parent: parent})
		})
	}
}

// Break calls brk and returns a function that calls fix, once however often
// it is called, and at the latest when t ends: the shape of
// BlackholeHarness.Blackhole and PauseHarness.Pause. For a harness over
// internal/testserver's Proxy:
//
//	func (h *harness) Blackhole(t testing.TB) func() {
//		return drivertest.Break(t, func() { h.proxy.Blackhole(true) }, func() { h.proxy.Blackhole(false) })
//	}
func Break(t testing.TB, brk, fix func()) func() {
	brk()
	once := sync.OnceFunc(fix)
	t.Cleanup(once)
	return once
}

// faults is one fault scenario's state; parent is the name of the test
// that called RunFaultTests.
type faults struct {
	*suite
	parent string
}

// faultHarness returns the harness as H, or skips the test when it is not one.
func faultHarness[H Harness](f *faults) H {
	f.t.Helper()
	h, ok := f.h.(H)
	if !ok {
		f.t.Skipf("the harness does not implement %v", reflect.TypeFor[H]())
	}
	return h
}

// eventually retries op, 100 ms apart for at most 5 s, while it fails with
// an error matching dlock.ErrUnavailable: the first statements after a
// restart may meet connections the pool has not yet found dead.
func (f *faults) eventually(what string, op func() error) {
	f.t.Helper()
	var err error
	for range 50 {
		if err = op(); err == nil {
			return
		}
		if !errors.Is(err, dlock.ErrUnavailable) {
			f.t.Fatalf("%s: %v (want success or ErrUnavailable)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("%s: still failing: %v", what, err)
}

// wantLost waits up to 15 s for l's Done and checks that Err matches
// dlock.ErrLost.
func (f *faults) wantLost(l *dlock.Lock, after string) {
	f.t.Helper()
	f.waitDone(l, 15*time.Second)
	if err := l.Err(); !errors.Is(err, dlock.ErrLost) {
		f.t.Fatalf("Err %s = %v, want ErrLost", after, err)
	}
}

// wantDeadline calls op with a context of d and checks that it returns
// within d + 2.7 s with an error matching context.DeadlineExceeded.
func (f *faults) wantDeadline(what string, d time.Duration, op func(ctx context.Context) error) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, d)
	defer cancel()
	start := time.Now()
	err := op(ctx)
	if took := time.Since(start); took > d+2700*time.Millisecond {
		f.t.Errorf("%s took %v with a context of %v", what, took, d)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		f.t.Errorf("%s = %v, want an error matching context.DeadlineExceeded", what, err)
	}
}

// takeOver has c take key after its lease lapsed, retrying for up to 15 s,
// and checks that the fence is above prev.
func (f *faults) takeOver(c *dlock.Client, key string, prev uint64) *dlock.Lock {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 15*time.Second)
	defer cancel()
	l, err := c.Lock(ctx, key, dlock.WithRetry(dlock.LinearBackoff(50*time.Millisecond)))
	if err != nil {
		f.t.Fatalf("Lock(%q) after the holder was cut off: %v", key, err)
	}
	if l.Fence() <= prev {
		f.t.Errorf("fence after takeover = %d, want more than the lost holder's %d", l.Fence(), prev)
	}
	return l
}

func testRestartLeaseLapses(t *testing.T, f *faults) {
	h := faultHarness[RestartHarness](f)
	a, b := f.client(), f.client()
	key := f.key("lapse")
	l := f.tryLock(a, key, dlock.WithTTL(time.Second))
	h.Kill(t)
	f.wantLost(l, "after the server went away")
	// While down: errors name the server and match ErrUnavailable.
	// (A short context: a client that waits for the server to come back,
	// as etcd's does, must still say why when it gives up.)
	down, cancel := context.WithTimeout(f.ctx, 2*time.Second)
	defer cancel()
	_, err := b.TryLock(down, f.key("other"))
	if !errors.Is(err, dlock.ErrUnavailable) || !namesOneOf(err, h.Addr()) {
		t.Fatalf("TryLock with the server down = %v, want ErrUnavailable naming %s", err, h.Addr())
	}
	h.Restart(t)
	// The key is free once the lost lease ran out: at once where it ran
	// out while the server was down, a TTL after the restart where the
	// server extends every lease when it starts (etcd).
	var l2 *dlock.Lock
	f.eventually("Lock after restart", func() (err error) {
		ctx, cancel := context.WithTimeout(f.ctx, 15*time.Second)
		defer cancel()
		l2, err = b.Lock(ctx, key, dlock.WithRetry(dlock.LinearBackoff(50*time.Millisecond)))
		return err
	})
	if l2.Fence() <= l.Fence() {
		t.Errorf("fence after restart = %d, want > %d (the counter survives)", l2.Fence(), l.Fence())
	}
	f.eventually("Unlock", func() error { return l2.Unlock(f.ctx) })
}

func testRestartLeaseSurvives(t *testing.T, f *faults) {
	h := faultHarness[RestartHarness](f)
	a, b := f.client(), f.client()
	key := f.key("keep")
	l := f.tryLock(a, key, dlock.WithTTL(20*time.Second))
	h.Restart(t)
	f.eventually("Refresh after restart", func() error { return l.Refresh(f.ctx, 0) })
	if err := l.Err(); err != nil {
		t.Fatalf("Err after restart and refresh = %v, want nil", err)
	}
	var in dlock.Info
	f.eventually("Inspect", func() (err error) { in, err = b.Inspect(f.ctx, key); return err })
	if !in.Held || in.Fence != l.Fence() {
		t.Fatalf("Inspect = %+v, want held with fence %d", in, l.Fence())
	}
	f.wantNotAcquired(b, key)
	f.eventually("Unlock", func() error { return l.Unlock(f.ctx) })
}

func testConnectionsKilled(t *testing.T, f *faults) {
	h := faultHarness[ConnKillHarness](f)
	a, b := f.client(), f.client()
	key := f.key("killed")
	// Long enough for a client that waits about a second before it dials
	// again (go-zookeeper) to reconnect and refresh within the TTL.
	const ttl = 2 * time.Second
	l := f.tryLock(a, key, dlock.WithTTL(ttl))
	for range 3 {
		if n := h.KillConnections(t); n == 0 {
			t.Fatal("no connection ended")
		}
		time.Sleep(ttl * 3 / 2)
		if err := l.Err(); err != nil {
			t.Fatalf("lock lost after its connections were ended: %v", err)
		}
	}
	in, err := b.Inspect(f.ctx, key)
	if err != nil || !in.Held || in.Fence != l.Fence() {
		t.Fatalf("Inspect = %+v, %v; want held with fence %d", in, err, l.Fence())
	}
	f.unlock(l)
}

// proxiedClient makes a Client over a driver behind h's proxy.
func (f *faults) proxiedClient(h BlackholeHarness) *dlock.Client {
	f.t.Helper()
	d, err := h.MakeProxiedDriver(f.ctx)
	if err != nil {
		f.t.Fatalf("MakeProxiedDriver: %v", err)
	}
	c := dlock.NewClient(d)
	f.t.Cleanup(func() { _ = c.Close() })
	return c
}

func testBlackholeLost(t *testing.T, f *faults) {
	h := faultHarness[BlackholeHarness](f)
	a, b := f.proxiedClient(h), f.client()
	key := f.key("partition")
	l := f.tryLock(a, key, dlock.WithTTL(time.Second))
	heal := h.Blackhole(t)
	deadline := time.Now().Add(15 * time.Second)
	var l2 *dlock.Lock
	for l2 == nil {
		got, err := b.TryLock(f.ctx, key)
		switch {
		case err == nil:
			l2 = got
		case !errors.Is(err, dlock.ErrNotAcquired):
			t.Fatalf("TryLock by the other owner: %v", err)
		case time.Now().After(deadline):
			t.Fatal("the other owner could not take the key 15 s after the holder was cut off")
		default:
			time.Sleep(20 * time.Millisecond)
		}
	}
	if !isDone(l) {
		t.Fatal("another owner took the key before the cut-off holder's Done closed")
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Fatalf("Err of the cut-off holder = %v, want ErrLost", err)
	}
	if l2.Fence() <= l.Fence() {
		t.Errorf("fence after takeover = %d, want more than the lost holder's %d", l2.Fence(), l.Fence())
	}
	f.unlock(l2)
	heal()
	f.eventually("TryLock after the partition healed", func() error {
		l3, err := a.TryLock(f.ctx, f.key("healed"))
		if err == nil {
			err = l3.Unlock(f.ctx)
		}
		return err
	})
}

func testBlackholeDeadline(t *testing.T, f *faults) {
	h := faultHarness[BlackholeHarness](f)
	a := f.proxiedClient(h)
	// A first lock opens the driver's connections, so that the partition
	// holds back statements, not the connection setup.
	f.unlock(f.tryLock(a, f.key("warm")))
	h.Blackhole(t)
	f.wantDeadline("TryLock through the partition", 300*time.Millisecond, func(ctx context.Context) error {
		_, err := a.TryLock(ctx, f.key("cut"))
		return err
	})
}

func testBlackholeBatch(t *testing.T, f *faults) {
	h := faultHarness[BlackholeHarness](f)
	d, err := h.MakeProxiedDriver(f.ctx)
	if err != nil {
		t.Fatalf("MakeProxiedDriver: %v", err)
	}
	defer d.Close()
	br, ok := d.(driver.BatchRefresher)
	if !ok {
		t.Skip("the driver is not a driver.BatchRefresher")
	}
	ttl := min(time.Minute, d.Capabilities().MaxTTL)
	keys := []string{f.key("batch-1"), f.key("batch-2")}
	var reqs []driver.RefreshRequest
	for _, key := range keys {
		if res, err := d.Acquire(f.ctx, driver.Request{Key: key, Token: "t", TTL: ttl}); err != nil || !res.Acquired {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		reqs = append(reqs, driver.RefreshRequest{Key: key, Token: "t", TTL: ttl})
	}
	// A key the driver never held: it may say ErrNotHeld without asking
	// the server (a driver that tracks its own grants), or time out.
	reqs = append(reqs, driver.RefreshRequest{Key: f.key("batch-other"), Token: "t", TTL: ttl})
	defer h.Blackhole(t)() // healed before d closes
	ctx, cancel := context.WithTimeout(f.ctx, 300*time.Millisecond)
	defer cancel()
	errs := br.RefreshBatch(ctx, reqs)
	if len(errs) != len(reqs) {
		t.Fatalf("RefreshBatch returned %d results for %d requests", len(errs), len(reqs))
	}
	for i, err := range errs[:len(keys)] {
		if err == nil || errors.Is(err, driver.ErrNotHeld) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("result %d (a held key) = %v, want an error matching context.DeadlineExceeded, not ErrNotHeld", i, err)
		}
	}
	if err := errs[len(keys)]; err == nil || !errors.Is(err, driver.ErrNotHeld) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("result of the key never held = %v, want ErrNotHeld or an error matching context.DeadlineExceeded", err)
	}
}

func testPause(t *testing.T, f *faults) {
	h := faultHarness[PauseHarness](f)
	a, b := f.client(), f.client()
	key := f.key("paused")
	l := f.tryLock(a, key, dlock.WithTTL(time.Second))
	f.unlock(f.tryLock(b, f.key("warm")))
	resume := h.Pause(t)
	f.wantLost(l, "while the server is paused")
	f.wantDeadline("TryLock on the paused server", 500*time.Millisecond, func(ctx context.Context) error {
		_, err := b.TryLock(ctx, key)
		return err
	})
	resume()
	f.unlock(f.takeOver(b, key, l.Fence()))
}
