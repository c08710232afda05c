package drivertest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// The scheduled-job options: WithMinHold (ShedLock's lockAtLeastFor) and
// WithMaxHold (lockAtMostFor).

// testMinHold: a lock taken WithMinHold(d) and unlocked at once stays held
// for another owner until d has passed since the grant, and is free soon
// after; Unlock itself returns nil and ends the Lock. Unlocked after d, it
// is released at once.
func testMinHold(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("job")
	hold := ttlWithin(a, time.Second)
	// The hold counts from the grant, which comes between the call and its
	// return: the call's start is the latest instant known to precede it.
	// (A time taken after the return can be later than the grant by the
	// reply's way back and the scheduling of a loaded machine: the key then
	// comes free that much less than hold after it.)
	granted := time.Now()
	l := s.tryLock(a, key, dlock.WithMinHold(hold))
	if err := l.Unlock(s.ctx); err != nil {
		t.Fatalf("Unlock before the min hold: %v", err)
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Err after Unlock = %v, want ErrNotHeld", err)
	}
	early := time.Now()
	if got, err := b.TryLock(s.ctx, key); err == nil {
		s.unlock(got)
		if early.Sub(granted) < hold {
			t.Fatalf("another owner got the key %v after the grant, within the min hold %v", early.Sub(granted), hold)
		}
	} else if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock by another owner within the min hold = %v, want ErrNotAcquired", err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, hold+10*time.Second)
	defer cancel()
	next, err := b.Lock(ctx, key, dlock.WithRetry(dlock.LinearBackoff(20*time.Millisecond)))
	if err != nil {
		t.Fatalf("Lock after the min hold: %v", err)
	}
	if took := time.Since(granted); took < hold {
		t.Errorf("another owner got the key %v after the grant, want no sooner than the min hold %v", took, hold)
	}
	if next.Fence() <= l.Fence() {
		t.Errorf("fence after the min hold %d, want more than %d", next.Fence(), l.Fence())
	}
	s.unlock(next)

	// Unlocked once the min hold is over: released at once.
	short := s.tryLock(a, key, dlock.WithMinHold(s.capabilities().MinTTL))
	time.Sleep(s.capabilities().MinTTL)
	s.unlock(short)
	s.unlock(s.tryLock(b, key))
}

// testMaxHold: with WithMaxHold(d), auto-refresh keeps the lock past its
// TTL but not past d: then the lock is lost (Err matches ErrLost and names
// the hold limit), not before d, and another owner gets the key soon after.
// A TTL longer than d is cut to d.
func testMaxHold(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("hung")
	ttl := ttlWithin(a, 500*time.Millisecond)
	maxHold := 3 * ttl
	l := s.tryLock(a, key, dlock.WithTTL(ttl), dlock.WithMaxHold(maxHold))
	granted := time.Now()
	s.waitDone(l, maxHold+10*time.Second)
	lost := time.Now()
	err := l.Err()
	if !errors.Is(err, dlock.ErrLost) || !strings.Contains(err.Error(), "WithMaxHold") {
		t.Errorf("Err at the max hold = %v, want ErrLost naming WithMaxHold", err)
	}
	// The lease ends at the hold's end; the client's deadline is a drift
	// allowance earlier.
	if held := lost.Sub(granted); held < maxHold-maxHold/50-50*time.Millisecond {
		t.Errorf("lost after %v, want no sooner than the max hold %v: auto-refresh stopped early", held, maxHold)
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	next, err := b.Lock(ctx, key, dlock.WithRetry(dlock.LinearBackoff(20*time.Millisecond)))
	if err != nil {
		t.Fatalf("Lock after the max hold: %v", err)
	}
	if next.Fence() <= l.Fence() {
		t.Errorf("fence after the max hold %d, want more than %d", next.Fence(), l.Fence())
	}
	s.unlock(next)

	cut := s.tryLock(a, key, dlock.WithTTL(ttlWithin(a, time.Minute)), dlock.WithMaxHold(ttl))
	if until := time.Until(cut.Deadline()); until > ttl {
		t.Errorf("deadline %v away with WithMaxHold(%v) and a longer TTL, want the TTL cut to the max hold", until, ttl)
	}
	s.unlock(cut)
}
