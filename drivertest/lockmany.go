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
	"github.com/dlock-go/dlock/driver"
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

// testDriverAcquireMany: a driver.MultiLocker's AcquireMany takes every key
// or none. Refused for one held key (exclusively, or by a shared grant), it
// leaves the free keys as they were; granted, each key is an exclusive lease
// of its own with its key's next fence, renewed by the same tokens and
// released one key at a time. The keys share a Redis hash tag, so that a
// Cluster can take them in one step.
func testDriverAcquireMany(t *testing.T, s *suite) {
	if !s.implements(func(d driver.Locker) bool { _, ok := d.(driver.MultiLocker); return ok }) {
		t.Skip("the driver does not implement driver.MultiLocker; LockMany takes keys one at a time")
	}
	d := s.driver()
	ml := d.(driver.MultiLocker)
	ttl := max(s.capabilities().MinTTL, 10*time.Second)
	keys := []string{s.key("{many}/1"), s.key("{many}/2"), s.key("{many}/3")}
	reqs := make([]driver.Request, len(keys))
	for i, k := range keys {
		reqs[i] = driver.Request{Key: k, Token: fmt.Sprintf("many-%d", i), TTL: ttl, Metadata: "many"}
	}
	many := func(what string) []driver.Result {
		t.Helper()
		res, err := ml.AcquireMany(s.ctx, reqs)
		if errors.Is(err, errors.ErrUnsupported) {
			t.Skipf("AcquireMany refuses these keys: %v", err)
		}
		if err != nil || len(res) != len(reqs) {
			t.Fatalf("AcquireMany %s = %+v, %v; want %d results", what, res, err, len(reqs))
		}
		return res
	}
	wantNone := func(what string, res []driver.Result, busy int) {
		t.Helper()
		for i, r := range res {
			if r.Acquired {
				t.Errorf("AcquireMany %s granted %q: %+v; want nothing granted", what, keys[i], r)
			}
		}
		if res[busy].HolderTTL <= 0 {
			t.Errorf("AcquireMany %s: %q's HolderTTL = %v, want the holder's remaining lease", what, keys[busy], res[busy].HolderTTL)
		}
		for i, k := range keys {
			if i == busy {
				continue
			}
			if in, err := d.Inspect(s.ctx, k); err != nil || in.Held {
				t.Errorf("Inspect(%q) after AcquireMany %s = %+v, %v; want it left free", k, what, in, err)
			}
		}
	}

	// One key held exclusively: nothing is taken, the others stay free.
	other := s.acquire(d, keys[1], "other", ttl, "")
	wantNone("beside an exclusive holder", many("beside an exclusive holder"), 1)
	first := s.acquire(d, keys[0], "x", ttl, "")
	s.release(d, keys[0], "x")
	s.release(d, keys[1], "other")

	// One key with a shared grant: the same.
	if sl, ok := d.(driver.SharedLocker); ok {
		res, err := sl.AcquireShared(s.ctx, driver.SharedRequest{Request: driver.Request{Key: keys[2], Token: "reader", TTL: ttl}})
		if err != nil || !res.Acquired {
			t.Fatalf("AcquireShared = %+v, %v; want a grant", res, err)
		}
		wantNone("beside a shared grant", many("beside a shared grant"), 2)
		s.release(d, keys[2], "reader")
	}

	// All free: every key granted, each with its own next fence.
	got := many("of free keys")
	for i, r := range got {
		if !r.Acquired || r.Fence == 0 {
			t.Fatalf("AcquireMany of free keys: %q = %+v; want granted with a fence", keys[i], r)
		}
		in, err := d.Inspect(s.ctx, keys[i])
		if err != nil || !in.Held || in.Fence != r.Fence {
			t.Errorf("Inspect(%q) = %+v, %v; want held with fence %d", keys[i], in, err, r.Fence)
		}
	}
	if got[0].Fence <= first.Fence || got[1].Fence <= other.Fence {
		t.Errorf("fences %d, %d; want more than the keys' earlier %d, %d", got[0].Fence, got[1].Fence, first.Fence, other.Fence)
	}
	if res, err := d.Acquire(s.ctx, driver.Request{Key: keys[0], Token: "y", TTL: ttl}); err != nil || res.Acquired {
		t.Errorf("Acquire of a key AcquireMany took = %+v, %v; want refused", res, err)
	}
	// Renewed as Acquire renews: keeping the fence where the driver's
	// Acquire does (ReacquireWithToken), else at least not lower (Redlock:
	// nodes that answered after the grant's majority may know another).
	keep := s.capabilities().ReacquireWithToken
	again := many("again by the same tokens")
	for i, r := range again {
		if !r.Acquired || r.Fence < got[i].Fence || (keep && r.Fence != got[i].Fence) {
			t.Errorf("AcquireMany renewing %q = %+v; want granted with fence %d (or, without ReacquireWithToken, more)", keys[i], r, got[i].Fence)
		}
	}
	s.release(d, keys[1], reqs[1].Token)
	if in, err := d.Inspect(s.ctx, keys[0]); err != nil || !in.Held {
		t.Errorf("Inspect(%q) after another key's release = %+v, %v; want still held", keys[0], in, err)
	}
	s.release(d, keys[0], reqs[0].Token)
	s.release(d, keys[2], reqs[2].Token)
	if next := s.acquire(d, keys[0], "z", ttl, ""); next.Fence <= got[0].Fence {
		t.Errorf("fence after AcquireMany's grant = %d, want more than %d", next.Fence, got[0].Fence)
	}
	s.release(d, keys[0], "z")
}
