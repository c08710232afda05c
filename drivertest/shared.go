package drivertest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// The lock family's subtests: shared leases (semaphores, RW locks) for a
// driver.SharedLocker, skipped elsewhere.

// needShared skips the test unless the harness's drivers grant shared
// leases.
func (s *suite) needShared() {
	s.t.Helper()
	if !s.implements(func(d driver.Locker) bool { _, ok := d.(driver.SharedLocker); return ok }) {
		s.t.Skip("the driver does not implement driver.SharedLocker")
	}
}

// holders returns c.Holders(key), failing the test on an error.
func (s *suite) holders(c *dlock.Client, key string) dlock.Holders {
	s.t.Helper()
	h, err := c.Holders(s.ctx, key)
	if err != nil {
		s.t.Fatalf("Holders(%q): %v", key, err)
	}
	return h
}

// permit takes a permit of sem with TryAcquire, failing the test when it
// is not granted.
func (s *suite) permit(sem *dlock.Semaphore, opts ...dlock.LockOption) *dlock.Lock {
	s.t.Helper()
	p, err := sem.TryAcquire(s.ctx, opts...)
	if err != nil {
		s.t.Fatalf("TryAcquire of %q (limit %d): %v", sem.Key(), sem.Limit(), err)
	}
	return p
}

// wantNoPermit fails the test unless sem.TryAcquire fails with want.
func (s *suite) wantNoPermit(sem *dlock.Semaphore, want error) {
	s.t.Helper()
	p, err := sem.TryAcquire(s.ctx)
	if err == nil {
		_ = p.Unlock(s.ctx)
		s.t.Fatalf("TryAcquire of %q (limit %d) succeeded, want %v", sem.Key(), sem.Limit(), want)
	}
	if !errors.Is(err, want) {
		s.t.Fatalf("TryAcquire of %q (limit %d) = %v, want an error matching %v", sem.Key(), sem.Limit(), err, want)
	}
}

// testSemaphoreLimit: a Semaphore of 3 hands out 3 permits to 3 clients,
// with increasing fences from the key's one counter, and no fourth; an
// exclusive lock waits for every permit; a permit given back is had again.
func testSemaphoreLimit(t *testing.T, s *suite) {
	s.needShared()
	key := s.key("sem")
	clients := []*dlock.Client{s.client(), s.client(), s.client(), s.client()}
	var permits []*dlock.Lock
	var last uint64
	for i, c := range clients[:3] {
		p := s.permit(c.Semaphore(key, 3), dlock.WithMetadata("permit"))
		if p.Fence() <= last {
			t.Errorf("permit %d: fence %d, want more than %d", i, p.Fence(), last)
		}
		last = p.Fence()
		permits = append(permits, p)
	}
	s.wantNoPermit(clients[3].Semaphore(key, 3), dlock.ErrNotAcquired)
	s.wantNotAcquired(clients[3], key)
	if n, err := clients[3].Semaphore(key, 3).Holders(s.ctx); err != nil || n != 3 {
		t.Errorf("Holders = %d, %v; want 3", n, err)
	}
	h := s.holders(clients[3], key)
	if len(h.Holders) != 3 || h.Limit != 3 {
		t.Fatalf("Holders = %+v, want 3 shared grants with limit 3", h)
	}
	for i, g := range h.Holders {
		if !g.Shared || g.Fence != permits[i].Fence() || g.Metadata != "permit" || g.TTL <= 0 {
			t.Errorf("holder %d = %+v, want shared, fence %d, metadata %q", i, g, permits[i].Fence(), "permit")
		}
	}
	if in, err := clients[3].Inspect(s.ctx, key); err != nil || !in.Held || in.Fence != last {
		t.Errorf("Inspect = %+v, %v; want held with the newest fence %d", in, err, last)
	}
	s.unlock(permits[1])
	p := s.permit(clients[3].Semaphore(key, 3))
	if p.Fence() <= last {
		t.Errorf("fence of a permit given again = %d, want more than %d", p.Fence(), last)
	}
	for _, l := range []*dlock.Lock{permits[0], permits[2], p} {
		s.unlock(l)
	}
	w := s.tryLock(clients[3], key)
	if w.Fence() <= p.Fence() {
		t.Errorf("exclusive fence after the permits = %d, want more than %d", w.Fence(), p.Fence())
	}
	s.wantNoPermit(clients[0].Semaphore(key, 3), dlock.ErrNotAcquired)
	s.unlock(w)
}

// testSemaphoreLimitMismatch: a Semaphore of another size, or an RWMutex's
// readers, on a key whose permits are out get ErrLimitMismatch, and the key
// is not oversubscribed; once the permits are back another size works.
func testSemaphoreLimitMismatch(t *testing.T, s *suite) {
	s.needShared()
	key := s.key("sizes")
	a, b := s.client(), s.client()
	p := s.permit(a.Semaphore(key, 2))
	s.wantNoPermit(b.Semaphore(key, 5), dlock.ErrLimitMismatch)
	if r, err := b.RWMutex(key).TryRLock(s.ctx); !errors.Is(err, dlock.ErrLimitMismatch) {
		if err == nil {
			_ = r.Unlock(s.ctx)
		}
		t.Fatalf("TryRLock on a semaphore's key = %v, want ErrLimitMismatch", err)
	}
	wctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	if _, err := b.Semaphore(key, 5).Acquire(wctx); !errors.Is(err, dlock.ErrLimitMismatch) {
		t.Fatalf("Acquire with another limit = %v, want ErrLimitMismatch at once", err)
	}
	s.unlock(p)
	s.unlock(s.permit(b.Semaphore(key, 5)))
	for _, sem := range []*dlock.Semaphore{a.Semaphore(key, 0), a.Semaphore(key, -1), a.Semaphore(key, dlock.MaxLimit+1)} {
		if _, err := sem.TryAcquire(s.ctx); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("TryAcquire with limit %d = %v, want ErrInvalidOption", sem.Limit(), err)
		}
	}
	if _, err := a.Semaphore("", 1).TryAcquire(s.ctx); !errors.Is(err, dlock.ErrInvalidKey) {
		t.Errorf("TryAcquire with an empty key = %v, want ErrInvalidKey", err)
	}
}

// testRWExclusion: readers of two clients overlap; a writer is refused
// while they read, and readers while it writes.
func testRWExclusion(t *testing.T, s *suite) {
	s.needShared()
	key := s.key("rw")
	a, b, w := s.client(), s.client(), s.client()
	r1, err := a.RWMutex(key).TryRLock(s.ctx)
	if err != nil {
		t.Fatalf("TryRLock: %v", err)
	}
	r2, err := b.RWMutex(key).TryRLock(s.ctx)
	if err != nil {
		t.Fatalf("second reader's TryRLock: %v", err)
	}
	if r2.Fence() <= r1.Fence() {
		t.Errorf("second reader's fence %d, want more than %d", r2.Fence(), r1.Fence())
	}
	if l, err := w.RWMutex(key).TryLock(s.ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		if err == nil {
			_ = l.Unlock(s.ctx)
		}
		t.Fatalf("writer's TryLock while two read = %v, want ErrNotAcquired", err)
	}
	if h := s.holders(w, key); len(h.Holders) != 2 || h.Limit != 0 || h.WritersWaiting != 0 {
		t.Errorf("Holders = %+v, want 2 readers, no limit, no writer waiting (a TryLock does not wait)", h)
	}
	s.unlock(r1)
	s.unlock(r2)
	wl, err := w.RWMutex(key).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("writer's TryLock after the readers: %v", err)
	}
	if r, err := a.RWMutex(key).TryRLock(s.ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		if err == nil {
			_ = r.Unlock(s.ctx)
		}
		t.Fatalf("TryRLock while a writer holds = %v, want ErrNotAcquired", err)
	}
	if wl.Fence() <= r2.Fence() {
		t.Errorf("writer's fence %d, want more than the readers' %d", wl.Fence(), r2.Fence())
	}
	s.unlock(wl)
}

// testWriterPreference: four readers of two clients, staggered, each
// holding its share 40 ms and taking the next at once, keep the key held
// by some reader all the time; a writer still gets it while they go on,
// because once it waits no new reader gets in. While it waits, Holders
// counts it and TryRLock is refused.
func testWriterPreference(t *testing.T, s *suite) {
	s.needShared()
	key := s.key("pref")
	readers := []*dlock.Client{s.client(), s.client()}
	writer := s.client()
	ttl := max(s.capabilities().MinTTL, 5*time.Second)
	ctx, cancel := context.WithTimeout(s.ctx, 60*time.Second)
	defer cancel()
	var (
		wg       sync.WaitGroup
		reads    atomic.Int64
		finished atomic.Int32 // readers whose loop ran out
		writing  atomic.Bool
		overlap  atomic.Int64
	)
	stop := make(chan struct{})
	for i := range 4 {
		c := readers[i%2]
		time.Sleep(10 * time.Millisecond)
		wg.Go(func() {
			defer finished.Add(1)
			for range 1500 { // 60 s at most
				select {
				case <-stop:
					return
				default:
				}
				r, err := c.RWMutex(key).RLock(ctx, dlock.WithTTL(ttl))
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("RLock: %v", err)
					}
					return
				}
				if writing.Load() {
					overlap.Add(1)
				}
				reads.Add(1)
				time.Sleep(40 * time.Millisecond)
				_ = r.Unlock(s.ctx)
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); reads.Load() < 20 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	// An anchor reader holds on until the waiting writer is seen, so that
	// the check does not race the other readers' drain.
	anchor, err := readers[1].RWMutex(key).RLock(ctx, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatalf("anchor's RLock: %v", err)
	}
	got := make(chan error, 1)
	var wl *dlock.Lock
	go func() {
		var err error
		wl, err = writer.RWMutex(key).Lock(ctx, dlock.WithTTL(ttl))
		got <- err
	}()
	counted := false
	for deadline := time.Now().Add(20 * time.Second); !counted && time.Now().Before(deadline); {
		if h, herr := writer.Holders(s.ctx, key); herr == nil && h.WritersWaiting > 0 && len(h.Holders) > 0 {
			counted = true
			if r, err := readers[0].RWMutex(key).TryRLock(s.ctx); err == nil {
				_ = r.Unlock(s.ctx)
				t.Error("a new reader got in while a writer waited")
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	s.unlock(anchor)
	if !counted {
		t.Error("Holders never counted the waiting writer")
	}
	err = <-got
	if err != nil {
		t.Fatalf("writer's Lock while readers keep overlapping: %v (after %d reads)", err, reads.Load())
	}
	if n := finished.Load(); n > 0 {
		t.Fatalf("the writer got in only after %d readers stopped", n)
	}
	writing.Store(true)
	if r, err := readers[0].RWMutex(key).TryRLock(s.ctx); err == nil {
		_ = r.Unlock(s.ctx)
		t.Error("TryRLock succeeded while the writer held the key")
	}
	if h := s.holders(writer, key); len(h.Holders) != 1 || h.Holders[0].Shared {
		t.Errorf("Holders while the writer holds = %+v, want the writer alone", h)
	}
	time.Sleep(50 * time.Millisecond)
	writing.Store(false)
	s.unlock(wl)
	if n := overlap.Load(); n != 0 {
		t.Errorf("%d readers got in while the writer held the key", n)
	}
	// And the readers go on after the writer.
	before := reads.Load()
	for deadline := time.Now().Add(10 * time.Second); reads.Load() == before && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if reads.Load() == before {
		t.Error("no reader got in after the writer released")
	}
}

// testWriterGivesUp: a writer whose wait ends (its ctx) lets readers in
// again at once, not at its TTL; one that vanished while it waited (its
// record made at the driver, never released) holds them back for at most
// its TTL.
func testWriterGivesUp(t *testing.T, s *suite) {
	s.needShared()
	key := s.key("giveup")
	r, w := s.client(), s.client()
	first, err := r.RWMutex(key).TryRLock(s.ctx)
	if err != nil {
		t.Fatalf("TryRLock: %v", err)
	}
	wctx, cancel := context.WithTimeout(s.ctx, 300*time.Millisecond)
	_, err = w.RWMutex(key).Lock(wctx, dlock.WithTTL(ttlWithin(w, time.Minute)))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("writer's Lock while a reader holds = %v, want DeadlineExceeded", err)
	}
	s.eventuallyRLock(r, key, 3*time.Second, "after the writer gave up")
	s.unlock(first)

	// A writer that vanished: its record, made at the driver, lapses with
	// its TTL. (A Queuer records waiting writers with its queue entries,
	// which go with the waiter's session or lease.)
	d := s.driver()
	if _, ok := d.(driver.Queuer); ok {
		return
	}
	sl := d.(driver.SharedLocker)
	grant, err := sl.AcquireShared(s.ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: "reader", TTL: time.Minute}})
	if err != nil || !grant.Acquired {
		t.Fatalf("AcquireShared = %+v, %v", grant, err)
	}
	res, err := d.Acquire(s.ctx, driver.Request{Key: key, Token: "gone", TTL: s.ttl, Hints: driver.Hints{Wait: true}})
	if err != nil || res.Acquired || !res.WriterWaiting {
		t.Fatalf("waiting writer's Acquire = %+v, %v; want refused with WriterWaiting", res, err)
	}
	if h := s.holders(r, key); h.WritersWaiting != 1 {
		t.Errorf("Holders = %+v, want one writer waiting", h)
	}
	start := time.Now()
	s.eventuallyRLock(r, key, s.expiryWait(), "after the vanished writer's TTL")
	if took := time.Since(start); took < s.ttl/2 {
		t.Errorf("a reader got in %v after a writer's record of TTL %v, want it held back", took, s.ttl)
	}
	if err := sl.Release(s.ctx, key, "gone"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("Release of a writer record that lapsed = %v, want ErrNotHeld", err)
	}
	s.release(d, key, "reader")
}

// eventuallyRLock takes and gives back a reader's share of key within d.
func (s *suite) eventuallyRLock(c *dlock.Client, key string, d time.Duration, when string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, d)
	defer cancel()
	l, err := c.RWMutex(key).RLock(ctx, dlock.WithRetry(dlock.LinearBackoff(10*time.Millisecond)))
	if err != nil {
		s.t.Fatalf("RLock %s: %v (within %v)", when, err, d)
	}
	s.unlock(l)
}

// testSharedHandOff: a permit given back goes to a waiter, and a permit
// whose holder vanished (no refresh, no release) is free at its TTL.
func testSharedHandOff(t *testing.T, s *suite) {
	s.needShared()
	key := s.key("handoff")
	a, b := s.client(), s.client()
	p := s.permit(a.Semaphore(key, 1))
	got := make(chan error, 1)
	wctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
	defer cancel()
	var q *dlock.Lock
	go func() {
		var err error
		q, err = b.Semaphore(key, 1).Acquire(wctx)
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	s.unlock(p)
	if err := <-got; err != nil {
		t.Fatalf("waiter's Acquire after the permit was given back: %v", err)
	}
	if q.Fence() <= p.Fence() {
		t.Errorf("waiter's fence %d, want more than %d", q.Fence(), p.Fence())
	}
	s.unlock(q)

	// A holder that vanished.
	gone := s.permit(a.Semaphore(key, 1), dlock.WithTTL(s.ttl), dlock.WithAutoRefresh(false))
	ctx, cancel2 := context.WithTimeout(s.ctx, s.expiryWait())
	defer cancel2()
	start := time.Now()
	next, err := b.Semaphore(key, 1).Acquire(ctx, dlock.WithRetry(dlock.LinearBackoff(10*time.Millisecond)))
	if err != nil {
		t.Fatalf("Acquire after the holder vanished: %v", err)
	}
	if took := time.Since(start); took < s.ttl/2 {
		t.Errorf("permit free %v after a grant of TTL %v, want it held until then", took, s.ttl)
	}
	if next.Fence() <= gone.Fence() {
		t.Errorf("fence after the lapse %d, want more than %d", next.Fence(), gone.Fence())
	}
	s.unlock(next)
}

// testDriverShared: a shared grant is a lease of its own at the driver: a
// foreign token cannot refresh or release it, the owner's renews it with
// its fence, a Release ends only its own grant, and the limit is stored.
func testDriverShared(t *testing.T, s *suite) {
	s.needShared()
	d := s.driver()
	sl := d.(driver.SharedLocker)
	key := s.key("drv")
	ttl := max(s.capabilities().MinTTL, 10*time.Second)
	share := func(token string, limit int) driver.Result {
		t.Helper()
		res, err := sl.AcquireShared(s.ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: ttl, Metadata: token}, Limit: limit})
		if err != nil {
			t.Fatalf("AcquireShared(%s): %v", token, err)
		}
		return res
	}
	a, b := share("a", 2), share("b", 2)
	if !a.Acquired || !b.Acquired || b.Fence <= a.Fence {
		t.Fatalf("AcquireShared = %+v, %+v; want both granted, increasing fences", a, b)
	}
	if c := share("c", 2); c.Acquired || c.HolderTTL <= 0 {
		t.Errorf("third AcquireShared with limit 2 = %+v, want refused with a HolderTTL", c)
	}
	if again := share("a", 2); !again.Acquired || again.Fence != a.Fence {
		t.Errorf("AcquireShared again with a's token = %+v, want granted with fence %d", again, a.Fence)
	}
	if res, err := d.Acquire(s.ctx, driver.Request{Key: key, Token: "w", TTL: ttl}); err != nil || res.Acquired || res.WriterWaiting || res.HolderTTL <= 0 {
		t.Errorf("exclusive Acquire (no Wait) = %+v, %v; want refused, not recorded, with a HolderTTL", res, err)
	}
	if err := d.Refresh(s.ctx, key, "c", ttl); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("Refresh by a foreign token = %v, want ErrNotHeld", err)
	}
	if err := d.Release(s.ctx, key, "c"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("Release by a foreign token = %v, want ErrNotHeld", err)
	}
	if err := d.Refresh(s.ctx, key, "b", ttl); err != nil {
		t.Errorf("Refresh of b's grant: %v", err)
	}
	s.release(d, key, "a")
	h, err := sl.Holders(s.ctx, key)
	if err != nil || len(h.Holders) != 1 || h.Holders[0].Fence != b.Fence || h.Holders[0].Metadata != "b" || h.Limit != 2 {
		t.Errorf("Holders after a's release = %+v, %v; want b's grant alone, limit 2", h, err)
	}
	if err := d.Release(s.ctx, key, "a"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("second Release of a = %v, want ErrNotHeld", err)
	}
	if _, err := sl.AcquireShared(s.ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: "d", TTL: ttl}, Limit: 3}); !errors.Is(err, driver.ErrLimitMismatch) {
		t.Errorf("AcquireShared with another limit = %v, want ErrLimitMismatch", err)
	}
	s.release(d, key, "b")
	if in, err := d.Inspect(s.ctx, key); err != nil || in.Held {
		t.Errorf("Inspect after every release = %+v, %v; want free", in, err)
	}
	if x := s.acquire(d, key, "x", ttl, ""); x.Fence <= b.Fence {
		t.Errorf("exclusive fence after the shared grants = %d, want more than %d", x.Fence, b.Fence)
	}
	if res, err := sl.AcquireShared(s.ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: "e", TTL: ttl}, Limit: 3}); err != nil || res.Acquired || res.HolderTTL <= 0 {
		t.Errorf("AcquireShared while an exclusive holder holds = %+v, %v; want refused with a HolderTTL", res, err)
	}
	s.release(d, key, "x")
}

// testDriverShareKeeper: RefreshShared and ReleaseShared act on a token's
// shared grant as Refresh and Release do, keep its fence, and refuse with
// ErrNotHeld, changing nothing, a token that holds the key exclusively or
// holds nothing; a released grant makes room for the next.
func testDriverShareKeeper(t *testing.T, s *suite) {
	if !s.implements(func(d driver.Locker) bool { _, ok := d.(driver.ShareKeeper); return ok }) {
		t.Skip("the driver does not implement driver.ShareKeeper")
	}
	d := s.driver()
	sk := d.(driver.ShareKeeper)
	key, other := s.key("keeper"), s.key("keeper-x")
	ttl := max(s.capabilities().MinTTL, 10*time.Second)
	share := func(token string) driver.Result {
		t.Helper()
		res, err := sk.AcquireShared(s.ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: ttl}, Limit: 1})
		if err != nil {
			t.Fatalf("AcquireShared(%s): %v", token, err)
		}
		return res
	}
	a := share("a")
	if !a.Acquired {
		t.Fatalf("AcquireShared = %+v, want granted", a)
	}
	if err := sk.RefreshShared(s.ctx, key, "a", 2*ttl); err != nil {
		t.Fatalf("RefreshShared: %v", err)
	}
	h, err := sk.Holders(s.ctx, key)
	if err != nil {
		t.Fatalf("Holders: %v", err)
	}
	if len(h.Holders) != 1 || h.Holders[0].Fence != a.Fence || h.Holders[0].TTL <= ttl {
		t.Errorf("Holders after RefreshShared to %v = %+v; want one grant, fence %d, extended", 2*ttl, h, a.Fence)
	}
	for _, tok := range []string{"b", ""} {
		if err := sk.RefreshShared(s.ctx, key, tok+"x", ttl); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("RefreshShared by a foreign token = %v, want ErrNotHeld", err)
		}
		if err := sk.ReleaseShared(s.ctx, key, tok+"x"); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("ReleaseShared by a foreign token = %v, want ErrNotHeld", err)
		}
	}
	if b := share("b"); b.Acquired {
		t.Fatalf("AcquireShared beyond the limit = %+v, want refused", b)
	}
	if err := sk.ReleaseShared(s.ctx, key, "a"); err != nil {
		t.Fatalf("ReleaseShared: %v", err)
	}
	if err := sk.ReleaseShared(s.ctx, key, "a"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("ReleaseShared again = %v, want ErrNotHeld", err)
	}
	if err := sk.RefreshShared(s.ctx, key, "a", ttl); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("RefreshShared after ReleaseShared = %v, want ErrNotHeld", err)
	}
	b := share("b")
	if !b.Acquired || b.Fence <= a.Fence {
		t.Fatalf("AcquireShared after ReleaseShared = %+v, want granted above fence %d", b, a.Fence)
	}
	if err := sk.ReleaseShared(s.ctx, key, "b"); err != nil {
		t.Fatalf("ReleaseShared(b): %v", err)
	}

	// An exclusive lease is not a shared grant.
	x, err := d.Acquire(s.ctx, driver.Request{Key: other, Token: "x", TTL: ttl})
	if err != nil || !x.Acquired {
		t.Fatalf("Acquire = %+v, %v", x, err)
	}
	if err := sk.RefreshShared(s.ctx, other, "x", ttl); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("RefreshShared of an exclusive lease = %v, want ErrNotHeld", err)
	}
	if err := sk.ReleaseShared(s.ctx, other, "x"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("ReleaseShared of an exclusive lease = %v, want ErrNotHeld", err)
	}
	if in, err := d.Inspect(s.ctx, other); err != nil || !in.Held || in.Fence != x.Fence {
		t.Errorf("Inspect after ReleaseShared of an exclusive lease = %+v, %v; want still held, fence %d", in, err, x.Fence)
	}
	if err := d.Release(s.ctx, other, "x"); err != nil {
		t.Errorf("Release: %v", err)
	}
}
