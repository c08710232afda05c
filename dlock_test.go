package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
)

func TestOpenErrors(t *testing.T) {
	ctx := t.Context()
	tests := []struct {
		url      string
		want     error
		contains string
	}{
		{"nosuch://host/x", dlock.ErrInvalidOption, "registered: "},
		{"mem://?bogus=1", dlock.ErrInvalidOption, "bogus"},
		{"mem:///path", dlock.ErrInvalidOption, "mem://NAME"},
		{"no-scheme", dlock.ErrInvalidOption, "no scheme"},
		{"mem://x?bogus=1&bogus=2", dlock.ErrInvalidOption, "bogus"},
	}
	for _, tc := range tests {
		_, err := dlock.Open(ctx, tc.url)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("Open(%q) = %v, want %v containing %q", tc.url, err, tc.want, tc.contains)
		}
	}
	_, err := dlock.Open(ctx, "nosuch://user:s3cret@host/")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open error %q leaks the password", err)
	}
	if !strings.Contains(err.Error(), "mem") {
		t.Errorf("unknown-scheme error %q does not list the registered mem scheme", err)
	}
}

// OpenWith hands the parsed URL to the given opener, whatever its scheme,
// keeps passwords out of the opener's errors, and refuses a nil opener.
func TestOpenWith(t *testing.T) {
	ctx := t.Context()
	store := memdlock.NewStore()
	var got *driver.URL
	opener := driver.URLOpenerFunc(func(_ context.Context, u *driver.URL) (driver.Locker, error) {
		got = u
		if u.Has("fail") {
			return nil, fmt.Errorf("%w: cannot reach %s", dlock.ErrUnavailable, u.URL.String())
		}
		return store.Driver(), nil
	})
	c, err := dlock.OpenWith(ctx, opener, "custom://app:s3cret@host:1/x")
	if err != nil {
		t.Fatalf("OpenWith: %v", err)
	}
	defer c.Close()
	if got == nil || got.Scheme != "custom" || got.Host != "host:1" {
		t.Fatalf("opener got %v, want the parsed custom://host:1/x", got)
	}
	if _, err := c.TryLock(ctx, "k"); err != nil {
		t.Fatalf("TryLock on the opener's driver: %v", err)
	}
	if in, err := store.NewClient().Inspect(ctx, "k"); err != nil || !in.Held {
		t.Errorf("the lock is not in the opener's store: %+v, %v", in, err)
	}
	_, err = dlock.OpenWith(ctx, opener, "custom://app:s3cret@host:1/x?fail=1")
	if !errors.Is(err, dlock.ErrUnavailable) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("OpenWith error = %v, want ErrUnavailable without the password", err)
	}
	for _, o := range []driver.URLOpener{nil, (*nilOpener)(nil)} {
		if _, err := dlock.OpenWith(ctx, o, "mem://x"); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("OpenWith(%T(nil)) = %v, want ErrInvalidOption", o, err)
		}
	}
	if _, err := dlock.OpenWith(ctx, opener, "no-scheme"); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("OpenWith of a URL without scheme = %v, want ErrInvalidOption", err)
	}
}

type nilOpener struct{}

func (*nilOpener) OpenLockerURL(context.Context, *driver.URL) (driver.Locker, error) {
	panic("called on a nil opener")
}

func TestOpenSharedStore(t *testing.T) {
	ctx := t.Context()
	a, err := dlock.Open(ctx, "mem://shared-test")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := dlock.Open(ctx, "mem://shared-test")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l, err := a.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("second client on the same mem store: TryLock = %v, want ErrNotAcquired", err)
	}
	_ = l.Unlock(ctx)
}

func TestRetryStrategies(t *testing.T) {
	if got := dlock.NoRetry().NextBackoff(1); got >= 0 {
		t.Errorf("NoRetry = %v, want negative", got)
	}
	if got := dlock.LinearBackoff(7 * time.Millisecond).NextBackoff(5); got != 7*time.Millisecond {
		t.Errorf("LinearBackoff = %v, want 7ms", got)
	}
	exp := dlock.ExponentialBackoff(10*time.Millisecond, 80*time.Millisecond)
	for attempt, ceil := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 4: 80, 5: 80, 100: 80} {
		ceil *= time.Millisecond
		for i := 0; i < 50; i++ {
			if got := exp.NextBackoff(attempt); got < ceil/2 || got > ceil {
				t.Fatalf("ExponentialBackoff attempt %d = %v, want in [%v, %v]", attempt, got, ceil/2, ceil)
			}
		}
	}
	lim := dlock.LimitRetry(dlock.LinearBackoff(time.Millisecond), 3)
	if lim.NextBackoff(2) < 0 || lim.NextBackoff(3) >= 0 {
		t.Errorf("LimitRetry(3): attempt 2 = %v, attempt 3 = %v; want >= 0 then < 0", lim.NextBackoff(2), lim.NextBackoff(3))
	}
}

func TestLockGivesUp(t *testing.T) {
	ctx := t.Context()
	c := memdlock.NewClient()
	defer c.Close()
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	_, err = c.Lock(ctx, "k", dlock.WithRetry(dlock.LimitRetry(dlock.LinearBackoff(time.Millisecond), 3)))
	if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("Lock with LimitRetry = %v, want ErrNotAcquired", err)
	}
}

func TestNotificationHandOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := memdlock.NewClient()
	defer c.Close()
	l, err := c.TryLock(ctx, "k", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		// A backoff far longer than the test: only the release
		// notification can wake this waiter in time.
		l2, err := c.Lock(ctx, "k", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
		if err == nil {
			err = l2.Unlock(ctx)
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
}

func TestEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var (
		mu     sync.Mutex
		events []dlock.EventKind
	)
	store := memdlock.NewStore()
	c := store.NewClient(dlock.WithEventHook(func(e dlock.Event) {
		mu.Lock()
		events = append(events, e.Kind)
		mu.Unlock()
	}))
	defer c.Close()
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
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
	mu.Lock()
	defer mu.Unlock()
	// The releasing goroutine's event may come after the waiter's: count.
	want := map[dlock.EventKind]int{dlock.EventAcquired: 3, dlock.EventReleased: 2, dlock.EventWaited: 1, dlock.EventRefreshed: 1, dlock.EventLost: 1}
	got := map[dlock.EventKind]int{}
	for _, k := range events {
		got[k]++
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%d %v events, want %d (all: %v)", got[k], k, n, events)
		}
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

func TestWaiterRidesOutTransientErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	store := memdlock.NewStore()
	holder := store.NewClient()
	defer holder.Close()
	l, err := holder.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	f := &faulty{Locker: store.Driver(), acquireErrs: 3}
	c := dlock.NewClient(f)
	defer c.Close()
	go func() { time.Sleep(100 * time.Millisecond); _ = l.Unlock(ctx) }()
	l2, err := c.Lock(ctx, "k", dlock.WithRetry(dlock.LinearBackoff(5*time.Millisecond)))
	if err != nil {
		t.Fatalf("waiter gave up on a passing failure: %v", err)
	}
	_ = l2.Unlock(ctx)

	// The first attempt's failure is reported at once.
	f2 := &faulty{Locker: store.Driver(), acquireErrs: 1, attempts: 1}
	c2 := dlock.NewClient(f2)
	defer c2.Close()
	if _, err := c2.Lock(ctx, "k"); !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("Lock on an unreachable backend = %v, want ErrUnavailable at once", err)
	}
	// A waiter whose backend stays down ends with its ctx, naming the cause.
	l3, _ := holder.TryLock(ctx, "k")
	f3 := &faulty{Locker: store.Driver(), acquireErrs: 1 << 30}
	c3 := dlock.NewClient(f3)
	defer c3.Close()
	wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer wcancel()
	_, err = c3.Lock(wctx, "k")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("waiter on a backend that went down = %v, want DeadlineExceeded wrapping the last error", err)
	}
	_ = l3.Unlock(ctx)
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

type counting struct {
	driver.Locker
	mu       sync.Mutex
	attempts int
}

func (c *counting) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	c.mu.Lock()
	c.attempts++
	c.mu.Unlock()
	return c.Locker.Acquire(ctx, req)
}

func (c *counting) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	return c.Locker.(driver.Notifier).WatchReleases(ctx, key)
}

// Goroutines of one client queue locally: the backend sees one contender per
// client, and a local release hands the key on without a poll.
func TestLocalQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	d := &counting{Locker: memdlock.NewStore().Driver()}
	c := dlock.NewClient(d)
	defer c.Close()
	const goroutines, rounds = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				// Only a release can wake a waiter in time.
				l, err := c.Lock(ctx, "hot", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
				if err != nil {
					errs <- err
					return
				}
				time.Sleep(100 * time.Microsecond)
				if err := l.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if perGrant := float64(d.attempts) / (goroutines * rounds); perGrant > 1.2 {
		t.Errorf("%d backend attempts for %d grants (%.1f each), want at most 1.2 each", d.attempts, goroutines*rounds, perGrant)
	}
}

// queuer is a Queuer whose queue never grants and ignores Close.
type queuer struct{ driver.Locker }

func (q queuer) AcquireQueued(ctx context.Context, req driver.Request) (driver.Result, error) {
	<-ctx.Done()
	return driver.Result{}, ctx.Err()
}

func (q queuer) Close() error { return nil }

func TestCloseWakesQueuedWaiters(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := dlock.NewClient(queuer{memdlock.NewStore().Driver()})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Lock(ctx, "k")
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	_ = c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, dlock.ErrClosed) {
			t.Fatalf("queued waiter after Close = %v, want ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("queued waiter not woken by Close")
	}
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

// ghostly is a client's connection to a store whose requests can land after
// the client gave up on them, as on a real network.
type ghostly struct {
	driver.Locker               // the client's connection
	server        driver.Locker // applies requests that land late
	mu            sync.Mutex
	late          time.Duration // > 0: an attempt whose ctx ends lands this much later
	lossy         int           // this attempt is granted, but its reply is lost
	attempts      int
	tokens        []string
	landed        sync.WaitGroup
}

func newGhostly(store *memdlock.Store) *ghostly {
	return &ghostly{Locker: store.Driver(), server: store.Driver()}
}

func (g *ghostly) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	g.mu.Lock()
	g.attempts++
	n, late, lossy := g.attempts, g.late, g.lossy
	g.tokens = append(g.tokens, req.Token)
	g.mu.Unlock()
	switch {
	case n == lossy:
		if _, err := g.server.Acquire(context.Background(), req); err != nil {
			return driver.Result{}, err
		}
		return driver.Result{}, fmt.Errorf("%w: test backend 127.0.0.1:1: connection reset", driver.ErrUnavailable)
	case late > 0:
		<-ctx.Done()
		g.landed.Add(1)
		go func() {
			defer g.landed.Done()
			time.Sleep(late)
			_, _ = g.server.Acquire(context.Background(), req)
		}()
		return driver.Result{}, ctx.Err()
	}
	return g.Locker.Acquire(ctx, req)
}

func (g *ghostly) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	return g.Locker.(driver.Notifier).WatchReleases(ctx, key)
}

func (g *ghostly) setLate(d time.Duration) {
	g.mu.Lock()
	g.late = d
	g.mu.Unlock()
}

// freeWithin fails t unless another client takes key within d.
func freeWithin(t *testing.T, other *dlock.Client, key string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		l, err := other.TryLock(t.Context(), key)
		if err == nil {
			_ = l.Unlock(t.Context())
			return
		}
		if !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryLock(%q) by another client: %v", key, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %q still held %v after the caller gave up: a grant nobody holds", key, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockedBuffer is an io.Writer safe for a logger used by many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// An attempt whose ctx ends while it is in flight, and which the server then
// grants, is released in the background: the key is free again at once.
func TestUnknownOutcomeReleased(t *testing.T) {
	const token = "tok-do-not-log-0123456789"
	tests := []struct {
		name string
		call func(c *dlock.Client, ctx context.Context) error
	}{
		{"TryLock", func(c *dlock.Client, ctx context.Context) error {
			_, err := c.TryLock(ctx, "k")
			return err
		}},
		{"Lock", func(c *dlock.Client, ctx context.Context) error {
			_, err := c.Lock(ctx, "k")
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := memdlock.NewStore()
			g := newGhostly(store)
			g.setLate(50 * time.Millisecond)
			var logs lockedBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			c := dlock.NewClient(g, dlock.WithLogger(log), dlock.WithTokenGenerator(func() (string, error) { return token, nil }))
			defer c.Close()
			other := store.NewClient()
			defer other.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
			defer cancel()
			if err := tc.call(c, ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s with a ctx ending in flight = %v, want DeadlineExceeded", tc.name, err)
			}
			g.landed.Wait() // the grant has landed on the server
			freeWithin(t, other, "k", time.Second)
			if out := logs.String(); !strings.Contains(out, "outcome unknown") || strings.Contains(out, token) {
				t.Errorf("log = %q, want the cleanup at Debug and never the token", out)
			}
		})
	}
}

// The background release never frees a lock the same client holds with the
// same token (WithToken reuse).
func TestUnknownOutcomeKeepsOwnLock(t *testing.T) {
	ctx := t.Context()
	store := memdlock.NewStore()
	g := newGhostly(store)
	c := dlock.NewClient(g)
	defer c.Close()
	l, err := c.TryLock(ctx, "k", dlock.WithToken("shared-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	g.setLate(30 * time.Millisecond)
	actx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := c.TryLock(actx, "k", dlock.WithToken("shared-token")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second TryLock = %v, want DeadlineExceeded", err)
	}
	g.landed.Wait()
	time.Sleep(time.Second) // past the release schedule
	other := store.NewClient()
	defer other.Close()
	if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock by another client = %v, want ErrNotAcquired: the cleanup freed the client's own lock", err)
	}
	if err := l.Refresh(ctx, 0); err != nil {
		t.Fatalf("Refresh of the held lock after the cleanup: %v", err)
	}
}

// Close waits for the background releases: a process that exits right
// after Close leaves no grant behind.
func TestCloseWaitsForUnknownOutcomes(t *testing.T) {
	store := memdlock.NewStore()
	g := newGhostly(store)
	g.setLate(150 * time.Millisecond)
	c := dlock.NewClient(g)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	if _, err := c.TryLock(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("TryLock = %v, want Canceled", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	g.landed.Wait()
	other := store.NewClient()
	defer other.Close()
	l, err := other.TryLock(t.Context(), "k")
	if err != nil {
		t.Fatalf("TryLock right after Close = %v, want the late grant released before Close returned", err)
	}
	_ = l.Unlock(t.Context())
}

// A waiter that goes on after an attempt whose reply was lost (granted on
// the server all the same) gets the key, and the background release of the
// lost attempt never frees the lock it then holds.
func TestRetryAfterUnknownOutcome(t *testing.T) {
	for _, given := range []bool{false, true} {
		t.Run(fmt.Sprintf("WithToken=%v", given), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			store := memdlock.NewStore()
			holder := store.NewClient()
			defer holder.Close()
			hl, err := holder.TryLock(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			g := newGhostly(store)
			g.lossy = 2 // the attempt after the holder's release
			c := dlock.NewClient(g)
			defer c.Close()
			opts := []dlock.LockOption{dlock.WithRetry(dlock.LinearBackoff(10 * time.Millisecond))}
			if given {
				opts = append(opts, dlock.WithToken("given-token"))
			}
			go func() { time.Sleep(50 * time.Millisecond); _ = hl.Unlock(ctx) }()
			l, err := c.Lock(ctx, "k", opts...)
			if err != nil {
				t.Fatalf("Lock after a lost reply: %v", err)
			}
			defer l.Unlock(ctx)
			g.mu.Lock()
			lost := g.tokens[1]
			g.mu.Unlock()
			if !given && l.Token() == lost {
				t.Errorf("lock took the lost attempt's token: the next attempt must use a new one")
			}
			time.Sleep(time.Second) // past the release schedule
			if err := l.Err(); err != nil {
				t.Fatalf("lock after the cleanup: %v", err)
			}
			other := store.NewClient()
			defer other.Close()
			if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
				t.Fatalf("TryLock by another client = %v, want ErrNotAcquired: the cleanup freed the new lock", err)
			}
		})
	}
}

// lostWake is a driver whose attempts say they queued the caller on the
// server (Queued.Wait) and whose release notifications never come: every
// wake-up is lost.
type lostWake struct {
	driver.Locker
	queuedWait time.Duration
}

func (d lostWake) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	res, err := d.Locker.Acquire(ctx, req)
	if err == nil && !res.Acquired {
		res.Queued.Wait, res.HolderTTL = d.queuedWait, 0
	}
	return res, err
}

func (d lostWake) WatchReleases(context.Context, string) (<-chan struct{}, func(), error) {
	return make(chan struct{}), func() {}, nil
}

// A queued waiter whose wake-up is lost tries again after Queued.Wait, even
// when its retry strategy's backoff is far longer.
func TestQueuedWaitBoundsLongBackoff(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	store := memdlock.NewStore()
	holder := store.NewClient()
	defer holder.Close()
	held, err := holder.Lock(ctx, "k", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	waiter := dlock.NewClient(lostWake{Locker: store.Driver(), queuedWait: 50 * time.Millisecond})
	defer waiter.Close()
	time.AfterFunc(100*time.Millisecond, func() { _ = held.Unlock(context.Background()) })
	l, err := waiter.Lock(ctx, "k", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
	if err != nil {
		t.Fatalf("queued waiter with a lost wake-up: %v (want the key soon after the release, at its Queued.Wait)", err)
	}
	_ = l.Unlock(ctx)
}
