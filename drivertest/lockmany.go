package drivertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// testLockManyNoDeadlock: two clients lock {a, b} and {b, a} in a loop;
// both finish (no deadlock), never inside together, and every member's
// fence is its key's.
func testLockManyNoDeadlock(t *testing.T, s *suite) {
	a, b := s.key("acct/1"), s.key("acct/2")
	clients := []*dlock.Client{s.client(), s.client()}
	orders := [][]string{{a, b}, {b, a}}
	ctx, cancel := context.WithTimeout(s.ctx, 60*time.Second)
	defer cancel()
	var inside atomic.Int32
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for n := range 15 {
				set, err := c.LockMany(ctx, orders[i], dlock.WithRetry(dlock.ExponentialBackoff(time.Millisecond, 20*time.Millisecond)))
				if err != nil {
					t.Errorf("client %d, round %d: LockMany: %v", i, n, err)
					return
				}
				if inside.Add(1) != 1 {
					t.Errorf("client %d, round %d: both clients inside", i, n)
				}
				locks := set.Locks()
				if len(locks) != 2 || locks[0].Key() != orders[i][0] || locks[1].Key() != orders[i][1] {
					t.Errorf("Locks() = %v, want one per key in the order given", locks)
				}
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				if err := set.Unlock(ctx); err != nil {
					t.Errorf("Unlock: %v", err)
				}
			}
		})
	}
	wg.Wait()
}

// testLockManyAllOrNothing: a LockMany that cannot have one key leaves
// nothing held when its ctx ends; once the key is free it gets both, with
// each key's fence, and the set's Done closes when a member is lost.
func testLockManyAllOrNothing(t *testing.T, s *suite) {
	x, y := s.key("x"), s.key("y")
	a, b := s.client(), s.client()
	hold := s.tryLock(b, y)
	ctx, cancel := context.WithTimeout(s.ctx, 300*time.Millisecond)
	_, err := a.LockMany(ctx, []string{x, y})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockMany with a key held elsewhere = %v, want DeadlineExceeded", err)
	}
	if in, err := b.Inspect(s.ctx, x); err != nil || in.Held {
		t.Fatalf("Inspect(x) after the failed LockMany = %+v, %v; want free", in, err)
	}
	s.unlock(hold)
	set, err := a.LockMany(s.ctx, []string{x, y}, dlock.WithTTL(s.ttl), dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatalf("LockMany: %v", err)
	}
	for _, l := range set.Locks() {
		in, err := b.Inspect(s.ctx, l.Key())
		if err != nil || !in.Held || in.Fence != l.Fence() {
			t.Errorf("Inspect(%q) = %+v, %v; want held with the member's fence %d", l.Key(), in, err, l.Fence())
		}
	}
	if set.Err() != nil {
		t.Errorf("Err while held = %v", set.Err())
	}
	select {
	case <-set.Done():
	case <-time.After(s.expiryWait()):
		t.Fatal("the set's Done did not close when its members' leases ran out")
	}
	if err := set.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Errorf("Err after the loss = %v, want ErrLost", err)
	}
}

// testLockManyInput: no keys, too many, duplicates and invalid keys are
// refused with ErrInvalidKey before anything is taken.
func testLockManyInput(t *testing.T, s *suite) {
	c := s.client()
	many := make([]string, dlock.MaxLockManyKeys+1)
	for i := range many {
		many[i] = s.key(fmt.Sprint(i))
	}
	for name, keys := range map[string][]string{
		"none":      nil,
		"too many":  many,
		"duplicate": {s.key("d"), s.key("e"), s.key("d")},
		"empty key": {s.key("d"), ""},
		"too long":  {strings.Repeat("k", dlock.MaxKeyLen+1)},
	} {
		if _, err := c.LockMany(s.ctx, keys); !errors.Is(err, dlock.ErrInvalidKey) {
			t.Errorf("LockMany(%s) = %v, want ErrInvalidKey", name, err)
		}
	}
	if in, err := c.Inspect(s.ctx, s.key("d")); err != nil || in.Held {
		t.Errorf("Inspect after refused calls = %+v, %v; want free", in, err)
	}
}
