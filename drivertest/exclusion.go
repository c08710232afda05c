package drivertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// testExclusion has goroutines of several clients increment a counter in
// two steps under one key: no critical sections overlap and no increment is
// lost.
func testExclusion(t *testing.T, s *suite) {
	const clients, goroutines, rounds = 4, 32, 50
	cs := make([]*dlock.Client, clients)
	for i := range cs {
		cs[i] = s.client()
	}
	key := s.key("counter")
	var (
		counter atomic.Int64 // read and written in two steps: a plain counter
		inside  atomic.Int32
		overlap atomic.Int32
		wg      sync.WaitGroup
		errs    = make(chan error, goroutines)
	)
	retry := dlock.WithRetry(dlock.ExponentialBackoff(time.Millisecond, 25*time.Millisecond))
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(c *dlock.Client) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				l, err := c.Lock(s.ctx, key, retry, dlock.WithTTL(max(s.ttl, 5*time.Second)))
				if err != nil {
					errs <- fmt.Errorf("lock: %w", err)
					return
				}
				if inside.Add(1) != 1 {
					overlap.Add(1)
				}
				v := counter.Load()
				if r%8 == 0 {
					time.Sleep(50 * time.Microsecond)
				}
				counter.Store(v + 1)
				inside.Add(-1)
				if err := l.Unlock(s.ctx); err != nil {
					errs <- fmt.Errorf("unlock: %w", err)
					return
				}
			}
		}(cs[g%clients])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := overlap.Load(); got != 0 {
		t.Errorf("critical sections overlapped %d times", got)
	}
	if got, want := counter.Load(), int64(goroutines*rounds); got != want {
		t.Errorf("counter = %d, want %d", got, want)
	}
}

// testTryLockContention checks that TryLock of a held key fails with
// ErrNotAcquired, for another client and for the holder's own client, and
// succeeds once the key is released.
func testTryLockContention(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("k")
	la := s.tryLock(a, key)
	s.wantNotAcquired(b, key)
	s.wantNotAcquired(a, key) // a second owner on the same client is still another owner
	s.unlock(la)
	lb := s.tryLock(b, key)
	s.unlock(lb)
}

// testUnlockIdempotent checks that a second Unlock, and a Refresh after
// Unlock, get ErrNotHeld and leave the next owner's lock alone.
func testUnlockIdempotent(t *testing.T, s *suite) {
	a, b, c := s.client(), s.client(), s.client()
	key := s.key("k")
	la := s.tryLock(a, key)
	s.unlock(la)
	lb := s.tryLock(b, key)
	if err := la.Unlock(s.ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("second Unlock = %v, want ErrNotHeld", err)
	}
	if err := la.Refresh(s.ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Refresh after Unlock = %v, want ErrNotHeld", err)
	}
	// b's lock must have survived a's second Unlock.
	s.wantNotAcquired(c, key)
	if err := lb.Refresh(s.ctx, 0); err != nil {
		t.Fatalf("Refresh of the new owner's lock after the old owner's second Unlock: %v", err)
	}
	if isDone(lb) {
		t.Fatal("new owner's Done closed by the old owner's Unlock")
	}
	s.unlock(lb)
}

// testExpiryAndTakeover checks that a lock left without refresh lapses at
// its TTL, another owner's Lock then takes the key, and the old holder's Err
// reports ErrLost.
func testExpiryAndTakeover(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("k")
	la := s.tryLock(a, key, dlock.WithTTL(s.ttl), dlock.WithAutoRefresh(false))
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, s.expiryWait())
	defer cancel()
	lb, err := b.Lock(ctx, key, dlock.WithRetry(dlock.LinearBackoff(s.ttl/10)))
	if err != nil {
		t.Fatalf("takeover Lock after the holder's TTL: %v (after %v)", err, time.Since(start))
	}
	// The old holder's validity deadline must have passed no later than the
	// takeover. (Err checks the deadline itself; the expiry timer behind
	// Done may run late on a loaded machine, so Err is asked first.)
	if err := la.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Fatalf("old holder's Err = %v after another owner took the key, want ErrLost", err)
	}
	if !isDone(la) {
		t.Fatal("old holder's Done still open after Err reported the loss")
	}
	s.unlock(lb)
}

// testRefreshExtends checks that Refresh moves the deadline on and keeps the
// lock held past its original TTL.
func testRefreshExtends(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("k")
	la := s.tryLock(a, key, dlock.WithTTL(s.ttl), dlock.WithAutoRefresh(false))
	d0 := la.Deadline()
	time.Sleep(s.ttl / 2)
	if err := la.Refresh(s.ctx, 2*s.ttl); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if d1 := la.Deadline(); !d1.After(d0) {
		t.Fatalf("Refresh did not move the deadline: before %v, after %v", d0, d1)
	}
	time.Sleep(s.ttl*3/4 + 20*time.Millisecond) // past the original lease
	if err := la.Err(); err != nil {
		t.Fatalf("Err after refresh, past the original TTL = %v, want nil", err)
	}
	s.wantNotAcquired(b, key)
	s.unlock(la)
}

// testAfterExpiryNotHeld checks that Refresh and Unlock of a lapsed lock get
// ErrNotHeld.
func testAfterExpiryNotHeld(t *testing.T, s *suite) {
	a := s.client()
	la := s.tryLock(a, s.key("k"), dlock.WithTTL(s.ttl), dlock.WithAutoRefresh(false))
	s.waitDone(la, s.expiryWait())
	if err := la.Refresh(s.ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Refresh after expiry = %v, want ErrNotHeld", err)
	}
	if err := la.Unlock(s.ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Unlock after expiry = %v, want ErrNotHeld", err)
	}
	if err := la.Unlock(s.ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("second Unlock after expiry = %v, want ErrNotHeld", err)
	}
}

// testAutoRefresh checks that an auto-refreshed lock stays held for several
// TTLs.
func testAutoRefresh(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("k")
	la := s.tryLock(a, key, dlock.WithTTL(s.ttl))
	hold := max(time.Second+100*time.Millisecond, 4*s.ttl)
	select {
	case <-la.Done():
		t.Fatalf("auto-refreshed lock lost: %v", la.Err())
	case <-time.After(hold):
	}
	if err := la.Err(); err != nil {
		t.Fatalf("Err after %v with auto-refresh = %v, want nil", hold, err)
	}
	s.wantNotAcquired(b, key)
	s.unlock(la)
}

// testDoneAndErr checks Done and Err of a fresh lock, of an unlocked one
// (ErrNotHeld, not ErrLost) and of a lapsed one (ErrLost, not long before its
// TTL).
func testDoneAndErr(t *testing.T, s *suite) {
	a := s.client()
	la := s.tryLock(a, s.key("unlocked"))
	if isDone(la) || la.Err() != nil {
		t.Fatalf("fresh lock: done=%v err=%v, want open and nil", isDone(la), la.Err())
	}
	s.unlock(la)
	s.waitDone(la, time.Second)
	if err := la.Err(); !errors.Is(err, dlock.ErrNotHeld) || errors.Is(err, dlock.ErrLost) {
		t.Fatalf("Err after Unlock = %v, want ErrNotHeld and not ErrLost", err)
	}

	lb := s.tryLock(a, s.key("expired"), dlock.WithTTL(s.ttl), dlock.WithAutoRefresh(false))
	start := time.Now()
	s.waitDone(lb, s.expiryWait())
	if early := time.Since(start); early < s.ttl/2 {
		t.Fatalf("Done closed after %v, long before the TTL %v", early, s.ttl)
	}
	if err := lb.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Fatalf("Err after expiry = %v, want ErrLost", err)
	}
}
