package dlock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
)

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
