package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
)

func TestEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var (
		mu     sync.Mutex
		events []dlock.Event
		second int
	)
	store := memdlock.NewStore()
	c := store.NewClient(dlock.WithEventHook(func(e dlock.Event) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}), dlock.WithEventHook(func(dlock.Event) {
		mu.Lock()
		second++
		mu.Unlock()
	}))
	defer c.Close()
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	other := store.NewClient()
	defer other.Close()
	if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock of a held key = %v", err)
	}
	if _, err := c.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock of a held key = %v", err)
	}
	go func() { time.Sleep(30 * time.Millisecond); _ = l.Unlock(ctx) }()
	l2, err := c.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Refresh(ctx, 0); err != nil {
		t.Fatal(err)
	}
	_ = l2.Unlock(ctx)
	l3, err := c.TryLock(ctx, "k", dlock.WithTTL(20*time.Millisecond), dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	<-l3.Done()
	sem, err := c.Semaphore("s", 1).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = sem.Unlock(ctx)
	mu.Lock()
	defer mu.Unlock()
	// The releasing goroutine's event may come after the waiter's: count.
	want := map[dlock.EventKind]int{dlock.EventAcquired: 4, dlock.EventReleased: 3, dlock.EventWaiting: 1, dlock.EventWaited: 1,
		dlock.EventRefreshed: 1, dlock.EventLost: 1, dlock.EventFailed: 1}
	got := map[dlock.EventKind]int{}
	for _, e := range events {
		got[e.Kind]++
		if e.Backend != "memory" {
			t.Errorf("%v event's Backend = %q, want memory", e.Kind, e.Backend)
		}
		switch {
		case e.Kind == dlock.EventFailed && (e.Op != "try_lock" || !errors.Is(e.Err, dlock.ErrNotAcquired)):
			t.Errorf("failed event = %+v, want a try_lock with ErrNotAcquired", e)
		case e.Kind == dlock.EventLost && (e.Cause != dlock.CauseExpired || e.Op != "try_lock"):
			t.Errorf("lost event = %+v, want cause %s of a try_lock", e, dlock.CauseExpired)
		case (e.Kind == dlock.EventWaiting || e.Kind == dlock.EventWaited) && e.Op != "lock":
			t.Errorf("%v event's Op = %q, want lock", e.Kind, e.Op)
		case e.Key == "s" && e.Op != "acquire":
			t.Errorf("%v event of the semaphore's permit: Op = %q, want acquire", e.Kind, e.Op)
		}
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%d %v events, want %d (all: %v)", got[k], k, n, events)
		}
	}
	if second != len(events) {
		t.Errorf("the second hook saw %d events, the first %d; want every event in both", second, len(events))
	}
}

func TestTokenGenerator(t *testing.T) {
	ctx := t.Context()
	c := memdlock.NewClient(dlock.WithTokenGenerator(func() (string, error) { return "fixed-token", nil }))
	defer c.Close()
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if l.Token() != "fixed-token" {
		t.Errorf("Token() = %q, want fixed-token", l.Token())
	}
	_ = l.Unlock(ctx)

	boom := errors.New("no entropy")
	c2 := memdlock.NewClient(dlock.WithTokenGenerator(func() (string, error) { return "", boom }))
	defer c2.Close()
	if _, err := c2.TryLock(ctx, "k"); !errors.Is(err, boom) {
		t.Errorf("TryLock with a failing generator = %v, want its error", err)
	}
	a, _ := dlock.RandomToken()
	b, _ := dlock.RandomToken()
	if len(a) < 22 || a == b {
		t.Errorf("RandomToken gave %q and %q; want two distinct 128-bit tokens", a, b)
	}
}

// faulty wraps a driver to inject refresh and acquire faults.
type faulty struct {
	driver.Locker
	mu           sync.Mutex
	refreshErr   error
	acquireDelay time.Duration
	acquireErrs  int // fail this many attempts after the first
	attempts     int
	releaseErrs  int // fail this many releases
}

func (f *faulty) Release(ctx context.Context, key, token string) error {
	f.mu.Lock()
	fail := f.releaseErrs > 0
	f.releaseErrs--
	f.mu.Unlock()
	if fail {
		return fmt.Errorf("%w: test backend 127.0.0.1:1 down", driver.ErrUnavailable)
	}
	return f.Locker.Release(ctx, key, token)
}

func (f *faulty) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	f.mu.Lock()
	err := f.refreshErr
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.Locker.Refresh(ctx, key, token, ttl)
}

func (f *faulty) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	time.Sleep(f.acquireDelay)
	f.mu.Lock()
	f.attempts++
	fail := f.attempts > 1 && f.attempts <= 1+f.acquireErrs
	f.mu.Unlock()
	if fail {
		return driver.Result{}, fmt.Errorf("%w: test backend 127.0.0.1:1 down", driver.ErrUnavailable)
	}
	return f.Locker.Acquire(ctx, req)
}

func TestLossOnNotHeldRefresh(t *testing.T) {
	ctx := t.Context()
	f := &faulty{Locker: memdlock.NewStore().Driver()}
	c := dlock.NewClient(f)
	defer c.Close()
	l, err := c.TryLock(ctx, "k", dlock.WithTTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.refreshErr = driver.ErrNotHeld
	f.mu.Unlock()
	start := time.Now()
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the backend denied ownership")
	}
	// The first refresh (at TTL/3) sees ErrNotHeld: loss comes before the
	// deadline would have.
	if d := time.Since(start); d >= 280*time.Millisecond {
		t.Errorf("loss noticed after %v, want at the first refresh (about 100ms)", d)
	}
	if !errors.Is(l.Err(), dlock.ErrLost) || !errors.Is(l.Err(), dlock.ErrNotHeld) {
		t.Errorf("Err = %v, want ErrLost wrapping ErrNotHeld", l.Err())
	}
}

func TestLossAtDeadlineOnTransientErrors(t *testing.T) {
	ctx := t.Context()
	f := &faulty{Locker: memdlock.NewStore().Driver()}
	var failed int
	var mu sync.Mutex
	c := dlock.NewClient(f, dlock.WithEventHook(func(e dlock.Event) {
		if e.Kind == dlock.EventRefreshFailed {
			mu.Lock()
			failed++
			mu.Unlock()
		}
	}))
	defer c.Close()
	f.refreshErr = driver.ErrUnavailable
	l, err := c.TryLock(ctx, "k", dlock.WithTTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	deadline := l.Deadline()
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed at the validity deadline")
	}
	if now := time.Now(); now.Before(deadline) {
		t.Errorf("lost at %v, before the deadline %v despite only transient errors", now, deadline)
	}
	if !errors.Is(l.Err(), dlock.ErrLost) {
		t.Errorf("Err = %v, want ErrLost", l.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	if failed < 2 {
		t.Errorf("%d refresh_failed events, want retries before the deadline", failed)
	}
}

func TestLateGrantIsNotAGrant(t *testing.T) {
	ctx := t.Context()
	store := memdlock.NewStore()
	f := &faulty{Locker: store.Driver(), acquireDelay: 60 * time.Millisecond}
	c := dlock.NewClient(f)
	defer c.Close()
	if _, err := c.TryLock(ctx, "k", dlock.WithTTL(50*time.Millisecond)); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock whose reply came after the TTL = %v, want ErrNotAcquired", err)
	}
	// And the late grant was released, not left to block others.
	other := store.NewClient()
	defer other.Close()
	l, err := other.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("key left held by a late grant: %v", err)
	}
	_ = l.Unlock(ctx)
}

// TestLateGrantReleaseRetried: when the release of a late grant fails (the
// slow link holds it back), it is retried in the background, so the key is
// not left held for its TTL.
func TestLateGrantReleaseRetried(t *testing.T) {
	ctx := t.Context()
	store := memdlock.NewStore()
	// The delay comes before the grant, so the lease runs 200 ms from the
	// moment TryLock learns of it: only a release frees the key sooner.
	f := &faulty{Locker: store.Driver(), acquireDelay: 250 * time.Millisecond, releaseErrs: 1}
	c := dlock.NewClient(f)
	defer c.Close()
	if _, err := c.TryLock(ctx, "k", dlock.WithTTL(200*time.Millisecond), dlock.WithAutoRefresh(false)); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock whose reply came after the TTL = %v, want ErrNotAcquired", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		retried := f.releaseErrs < 0
		f.mu.Unlock()
		if retried {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the late grant's failed release was not retried within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	other := store.NewClient()
	defer other.Close()
	l, err := other.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("key still held after the retried release: %v", err)
	}
	_ = l.Unlock(ctx)
}

// batching counts RefreshBatch calls and can fail them.
type batching struct {
	driver.Locker
	mu    sync.Mutex
	calls int
	locks int
	fail  error
}

func (b *batching) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	b.mu.Lock()
	b.calls++
	b.locks += len(reqs)
	fail := b.fail
	b.mu.Unlock()
	errs := b.Locker.(driver.BatchRefresher).RefreshBatch(ctx, reqs)
	if fail != nil {
		for i := range errs {
			errs[i] = fail
		}
	}
	return errs
}

func TestBatchedRefresh(t *testing.T) {
	ctx := t.Context()
	d := &batching{Locker: memdlock.NewStore().Driver()}
	c := dlock.NewClient(d)
	defer c.Close()
	const n = 50
	const ttl = 300 * time.Millisecond
	locks := make([]*dlock.Lock, n)
	for i := range locks {
		l, err := c.TryLock(ctx, fmt.Sprintf("k%d", i), dlock.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		locks[i] = l
		time.Sleep(2 * time.Millisecond) // taken at different moments
	}
	time.Sleep(time.Second)
	for _, l := range locks {
		if err := l.Err(); err != nil {
			t.Fatalf("batch-refreshed lock lost: %v", err)
		}
	}
	d.mu.Lock()
	calls, refreshed := d.calls, d.locks
	d.mu.Unlock()
	// One refresh per lock every TTL/3 would be 50 × 10 = 500 round trips.
	if calls > 30 || refreshed < n*3 {
		t.Errorf("%d RefreshBatch calls refreshing %d locks in 1s; want few calls (<= 30, not 500) refreshing every lock several times", calls, refreshed)
	}

	// Transient failures: retried with a delay (no busy loop), lost at the deadline.
	d.mu.Lock()
	d.fail, d.calls = driver.ErrUnavailable, 0
	d.mu.Unlock()
	for _, l := range locks {
		select {
		case <-l.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("lock not lost at its deadline while refreshes fail")
		}
		if !errors.Is(l.Err(), dlock.ErrLost) {
			t.Fatalf("Err = %v, want ErrLost", l.Err())
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.calls > 60 {
		t.Errorf("%d RefreshBatch calls while failing for one TTL; want retries spaced by TTL/20", d.calls)
	}
}

// TestBatchedRefreshShorterTTL: a lock due sooner than every lock held
// before it still gets its refreshes in time (the refresher, asleep until
// the long lock is due, is woken for it).
func TestBatchedRefreshShorterTTL(t *testing.T) {
	ctx := t.Context()
	d := &batching{Locker: memdlock.NewStore().Driver()}
	c := dlock.NewClient(d)
	defer c.Close()
	long, err := c.TryLock(ctx, "long", dlock.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer long.Unlock(ctx)
	time.Sleep(20 * time.Millisecond) // the refresher sleeps until the long lock is due
	short, err := c.TryLock(ctx, "short", dlock.WithTTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer short.Unlock(ctx)
	select {
	case <-short.Done():
		t.Fatalf("short lock lost while the long one was held: %v", short.Err())
	case <-time.After(time.Second):
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.locks < 3 {
		t.Errorf("short lock refreshed %d times in 1s with TTL 300ms; want at least 3", d.locks)
	}
}

// slowFirst delays its first Acquire past the TTL and records every token.
type slowFirst struct {
	driver.Locker
	mu     sync.Mutex
	tokens []string
}

func (s *slowFirst) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	s.mu.Lock()
	s.tokens = append(s.tokens, req.Token)
	first := len(s.tokens) == 1
	s.mu.Unlock()
	if first {
		time.Sleep(req.TTL + 10*time.Millisecond)
	}
	return s.Locker.Acquire(ctx, req)
}

func TestLateGrantRetriesWithFreshToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d := &slowFirst{Locker: memdlock.NewStore().Driver()}
	c := dlock.NewClient(d)
	defer c.Close()
	l, err := c.Lock(ctx, "k", dlock.WithTTL(50*time.Millisecond), dlock.WithRetry(dlock.LinearBackoff(time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.tokens) < 2 || d.tokens[0] == d.tokens[1] || l.Token() == d.tokens[0] {
		t.Fatalf("attempt tokens %q, lock token %q: want a fresh token after the late grant", d.tokens, l.Token())
	}
}

// A panic in Do's fn that is recovered up the stack (as net/http does for
// every handler) must not leave the key held and refreshed.
func TestDoPanicUnlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	store := memdlock.NewStore()
	c := store.NewClient()
	defer c.Close()
	other := store.NewClient()
	defer other.Close()
	type boom struct{ n int }
	var fnCtx context.Context
	got := func() (v any) {
		defer func() { v = recover() }()
		_ = c.Do(ctx, "k", func(ctx context.Context) error {
			fnCtx = ctx
			panic(boom{7})
		})
		return nil
	}()
	if got != (boom{7}) {
		t.Fatalf("recovered %v from Do, want fn's panic value %v", got, boom{7})
	}
	if fnCtx.Err() == nil {
		t.Error("fn's context not cancelled after fn panicked")
	}
	l, err := other.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock after Do's fn panicked = %v, want the key free", err)
	}
	_ = l.Unlock(ctx)
}

func TestDoNilFn(t *testing.T) {
	ctx := t.Context()
	d := &counting{Locker: memdlock.NewStore().Driver()}
	c := dlock.NewClient(d)
	defer c.Close()
	if err := c.Do(ctx, "k", nil); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Fatalf("Do with a nil fn = %v, want an error matching ErrInvalidOption", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.attempts != 0 {
		t.Errorf("Do with a nil fn made %d acquire attempts, want 0", d.attempts)
	}
}

// noMaxTTL is a driver that declares no TTL bounds and can report a
// holder's TTL as long as a time.Duration goes.
type noMaxTTL struct {
	driver.Locker
	mu        sync.Mutex
	holderTTL time.Duration
	attempts  int
}

func (n *noMaxTTL) Capabilities() driver.Capabilities {
	caps := n.Locker.Capabilities()
	caps.MinTTL, caps.MaxTTL = 0, 0
	return caps
}

func (n *noMaxTTL) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	n.mu.Lock()
	n.attempts++
	h := n.holderTTL
	n.mu.Unlock()
	if h > 0 {
		return driver.Result{HolderTTL: h}, nil
	}
	return n.Locker.Acquire(ctx, req)
}

func TestTTLBounds(t *testing.T) {
	ctx := t.Context()
	d := &noMaxTTL{Locker: memdlock.NewStore().Driver()}
	c := dlock.NewClient(d)
	defer c.Close()
	caps := c.Capabilities()
	if caps.MinTTL != dlock.MinTTL || caps.MaxTTL != dlock.MaxTTL {
		t.Fatalf("Capabilities TTL bounds of a driver declaring none = [%v, %v], want [%v, %v]", caps.MinTTL, caps.MaxTTL, dlock.MinTTL, dlock.MaxTTL)
	}
	for _, ttl := range []time.Duration{dlock.MaxTTL + 1, math.MaxInt64} {
		if _, err := c.TryLock(ctx, "k", dlock.WithTTL(ttl)); !errors.Is(err, dlock.ErrInvalidTTL) {
			t.Errorf("TryLock(TTL %v) = %v, want ErrInvalidTTL", ttl, err)
		}
	}
	l, err := c.TryLock(ctx, "k", dlock.WithTTL(dlock.MaxTTL))
	if err != nil {
		t.Fatalf("TryLock(MaxTTL): %v", err)
	}
	if dl := l.Deadline(); !dl.After(time.Now().Add(dlock.MaxTTL / 2)) {
		t.Errorf("Deadline of a lock at MaxTTL = %v, want about %v from now", dl, dlock.MaxTTL)
	}
	if err := l.Refresh(ctx, math.MaxInt64); !errors.Is(err, dlock.ErrInvalidTTL) {
		t.Errorf("Refresh(MaxInt64) = %v, want ErrInvalidTTL", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// A holder's TTL reported as the longest time.Duration must not turn a
// waiter's sleep negative (a busy loop of attempts).
func TestHugeHolderTTLNoBusyLoop(t *testing.T) {
	d := &noMaxTTL{Locker: memdlock.NewStore().Driver(), holderTTL: math.MaxInt64}
	c := dlock.NewClient(d)
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.Lock(ctx, "k", dlock.WithRetry(dlock.LinearBackoff(50*time.Millisecond))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock = %v, want DeadlineExceeded", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// 300 ms of 50 ms backoffs: about 7 attempts, not thousands.
	if d.attempts > 30 {
		t.Errorf("%d attempts in 300ms with a 50ms backoff, want a few (a negative sleep polls without pause)", d.attempts)
	}
}

// exclusiveOnly hides every optional interface of a driver.
type exclusiveOnly struct{ driver.Locker }

// TestFamilyUnsupported: on a driver without shared leases, Semaphore and
// RWMutex's readers fail with ErrUnsupported; the writer's side and
// LockMany work.
func TestFamilyUnsupported(t *testing.T) {
	ctx := t.Context()
	c := dlock.NewClient(exclusiveOnly{memdlock.NewStore().Driver()})
	defer c.Close()
	if _, err := c.Semaphore("k", 2).TryAcquire(ctx); !errors.Is(err, dlock.ErrUnsupported) {
		t.Errorf("TryAcquire = %v, want ErrUnsupported", err)
	}
	if _, err := c.RWMutex("k").RLock(ctx); !errors.Is(err, dlock.ErrUnsupported) {
		t.Errorf("RLock = %v, want ErrUnsupported", err)
	}
	if _, err := c.Holders(ctx, "k"); !errors.Is(err, dlock.ErrUnsupported) {
		t.Errorf("Holders = %v, want ErrUnsupported", err)
	}
	w, err := c.RWMutex("k").Lock(ctx)
	if err != nil {
		t.Fatalf("RWMutex.Lock: %v", err)
	}
	_ = w.Unlock(ctx)
	set, err := c.LockMany(ctx, []string{"a", "b"})
	if err != nil {
		t.Fatalf("LockMany: %v", err)
	}
	if err := set.Unlock(ctx); err != nil {
		t.Fatalf("LockSet.Unlock: %v", err)
	}
	if err := set.Err(); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("LockSet.Err after Unlock = %v, want ErrNotHeld", err)
	}
}

// keeper is the memory driver as a driver.ShareKeeper that counts the
// calls of its ShareKeeper methods.
type keeper struct {
	driver.SharedLocker
	refreshes, releases atomic.Int32
}

func (k *keeper) RefreshShared(ctx context.Context, key, token string, ttl time.Duration) error {
	k.refreshes.Add(1)
	return k.SharedLocker.Refresh(ctx, key, token, ttl)
}

func (k *keeper) ReleaseShared(ctx context.Context, key, token string) error {
	k.releases.Add(1)
	return k.SharedLocker.Release(ctx, key, token)
}

// TestShareKeeperUsed: a shared grant's Refresh and Unlock go to the
// driver's RefreshShared and ReleaseShared; an exclusive lock's do not.
func TestShareKeeperUsed(t *testing.T) {
	ctx := t.Context()
	k := &keeper{SharedLocker: memdlock.NewStore().Driver().(driver.SharedLocker)}
	c := dlock.NewClient(k)
	defer c.Close()
	p, err := c.Semaphore("sem", 2).TryAcquire(ctx, dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Refresh(ctx, 0); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if err := p.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if r, u := k.refreshes.Load(), k.releases.Load(); r != 1 || u != 1 {
		t.Errorf("a permit's Refresh and Unlock made %d RefreshShared and %d ReleaseShared, want 1 and 1", r, u)
	}
	l, err := c.TryLock(ctx, "mutex", dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx, 0); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if r, u := k.refreshes.Load(), k.releases.Load(); r != 1 || u != 1 {
		t.Errorf("an exclusive lock's Refresh and Unlock reached RefreshShared or ReleaseShared (%d, %d calls in all)", r, u)
	}
}

// shareQueuer is a memdlock driver with an AcquireSharedQueued that retries
// AcquireShared until it is granted or ctx ends, counting its calls and
// the AcquireShared calls that come from the portable layer.
type shareQueuer struct {
	driver.SharedLocker
	queued, single atomic.Int32
}

func (q *shareQueuer) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	q.single.Add(1)
	return q.SharedLocker.AcquireShared(ctx, req)
}

func (q *shareQueuer) AcquireSharedQueued(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	q.queued.Add(1)
	for {
		sent := time.Now()
		res, err := q.SharedLocker.AcquireShared(ctx, req)
		if err != nil || res.Acquired {
			res.ValidUntil = driver.ValidUntil(sent, req.TTL)
			return res, err
		}
		select {
		case <-ctx.Done():
			return driver.Result{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestSharedQueuerUsed: a shared wait (Semaphore.Acquire, RLock) goes to a
// driver.SharedQueuer's AcquireSharedQueued, once; TryAcquire and an
// Acquire that does not retry make their one AcquireShared attempt; Close
// ends a queued shared wait with ErrClosed.
func TestSharedQueuerUsed(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	q := &shareQueuer{SharedLocker: memdlock.NewStore().Driver().(driver.SharedLocker)}
	c := dlock.NewClient(q)
	defer c.Close()
	sem := c.Semaphore("sem", 1)
	p, err := sem.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, s := q.queued.Load(), q.single.Load(); n != 0 || s != 1 {
		t.Errorf("TryAcquire made %d queued and %d single attempts, want 0 and 1", n, s)
	}
	if _, err := sem.Acquire(ctx, dlock.WithRetry(dlock.NoRetry())); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("Acquire with NoRetry of a taken permit = %v, want ErrNotAcquired", err)
	}
	if n := q.queued.Load(); n != 0 {
		t.Errorf("Acquire with NoRetry made %d queued attempts, want 0", n)
	}
	got := make(chan error, 1)
	go func() {
		w, err := sem.Acquire(ctx)
		if err == nil {
			err = w.Unlock(ctx)
		}
		got <- err
	}()
	for q.queued.Load() == 0 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	single := q.single.Load()
	if err := p.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the queued Acquire after the release: %v", err)
	}
	if n, s := q.queued.Load(), q.single.Load(); n != 1 || s != single {
		t.Errorf("a waiting Acquire made %d queued and %d more single attempts, want 1 and 0", n, s-single)
	}
	rw := c.RWMutex("rw")
	if _, err := rw.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	rl := make(chan error, 1)
	go func() {
		_, err := rw.RLock(ctx)
		rl <- err
	}()
	for q.queued.Load() == 1 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	_ = c.Close()
	if err := <-rl; !errors.Is(err, dlock.ErrClosed) {
		t.Errorf("a queued RLock when the client closed = %v, want ErrClosed", err)
	}
}
