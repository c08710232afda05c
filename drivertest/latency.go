package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// The fault scenarios of a slow or briefly cut link: LateGrant,
// AbandonedAcquire and BlackholeHeals; and SemaphoreBlackhole, a cut-off
// permit holder.

// LatencyHarness is a BlackholeHarness whose proxy can also delay what it
// forwards, as a congested or distant link would.
type LatencyHarness interface {
	BlackholeHarness
	// Delay makes the proxy hold every chunk of data for d in each
	// direction (a round trip gains 2d) until restore is called. restore
	// is safe to call more than once; the harness calls it when t ends at
	// the latest.
	Delay(t testing.TB, d time.Duration) (restore func())
}

// ttlWithin returns ttl within c's bounds (the proxied driver's, which
// may differ from MakeDriver's: a shorter session).
func ttlWithin(c *dlock.Client, ttl time.Duration) time.Duration {
	caps := c.Capabilities()
	return min(max(ttl, caps.MinTTL), caps.MaxTTL)
}

func testLateGrant(t *testing.T, f *faults) {
	h := faultHarness[LatencyHarness](f)
	a, b := f.proxiedClient(h), f.client()
	// Warm the connections, so that the delay is the replies' alone.
	f.unlock(f.tryLock(a, f.key("warm")))
	key := f.key("late")
	ttl := ttlWithin(a, 200*time.Millisecond)
	restore := h.Delay(t, ttl*3/4) // a round trip takes 1.5 TTL
	l, err := a.TryLock(f.ctx, key, dlock.WithTTL(ttl))
	if err == nil {
		t.Fatalf("TryLock with a %v TTL over a %v round trip returned a lock (deadline in %v)", ttl, ttl*3/2, time.Until(l.Deadline()))
	}
	if !errors.Is(err, dlock.ErrNotAcquired) && !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("TryLock with a %v TTL over a %v round trip = %v, want ErrNotAcquired or ErrUnavailable", ttl, ttl*3/2, err)
	}
	restore()
	// Whatever the late attempt took is given back or has lapsed.
	f.unlock(f.takeOver(b, key, 0))

	// A slow link whose round trip fits the lease grants as usual.
	long := ttlWithin(a, 3*time.Second)
	h.Delay(t, 25*time.Millisecond)
	l = f.tryLock(a, f.key("slow"), dlock.WithTTL(long))
	if err := l.Refresh(f.ctx, 0); err != nil {
		t.Fatalf("Refresh over a 50ms round trip: %v", err)
	}
	f.unlock(l)
}

func testAbandonedAcquire(t *testing.T, f *faults) {
	h := faultHarness[BlackholeHarness](f)
	a, b := f.proxiedClient(h), f.client()
	f.unlock(f.tryLock(a, f.key("warm")))
	key := f.key("abandoned")
	heal := h.Blackhole(t)
	f.wantDeadline("TryLock through the partition", 300*time.Millisecond, func(ctx context.Context) error {
		_, err := a.TryLock(ctx, key, dlock.WithTTL(ttlWithin(a, time.Minute)))
		return err
	})
	heal()
	// The held-back request may reach the server now and be granted; the
	// client that gave up must give the key back, not leave it held for
	// its TTL (a minute where the driver allows it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		in, err := b.Inspect(f.ctx, key)
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		if !in.Held && in.Fence > 0 {
			break // granted late and released
		}
		if time.Now().After(deadline) {
			if in.Held {
				t.Fatalf("the abandoned attempt's grant is still held 5 s after the partition healed: %+v", in)
			}
			t.Log("the abandoned attempt never reached the server")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.unlock(f.tryLock(b, key))
}

func testBlackholeHeals(t *testing.T, f *faults) {
	h := faultHarness[BlackholeHarness](f)
	a, b := f.proxiedClient(h), f.client()
	key := f.key("blip")
	ttl := ttlWithin(a, 4*time.Second)
	l := f.tryLock(a, key, dlock.WithTTL(ttl))
	heal := h.Blackhole(t)
	time.Sleep(ttl / 4)
	f.wantNotAcquired(b, key)
	heal()
	// Over a whole TTL after the partition the lock stays held: its
	// refreshes went through once the link was back.
	time.Sleep(ttl)
	if err := l.Err(); err != nil {
		t.Fatalf("Err after a partition of a quarter TTL = %v, want nil", err)
	}
	f.eventually("Refresh after the partition", func() error { return l.Refresh(f.ctx, 0) })
	if in, err := b.Inspect(f.ctx, key); err != nil || !in.Held || in.Fence != l.Fence() {
		t.Fatalf("Inspect = %+v, %v; want held with fence %d", in, err, l.Fence())
	}
	f.unlock(l)
}

// testSemaphoreBlackhole: a semaphore of 2 whose one permit holder is cut
// off: the permit goes to another client only after the cut-off holder's
// Done closed, so never more than 2 valid permits exist, and the one that
// stayed reachable keeps its permit throughout.
func testSemaphoreBlackhole(t *testing.T, f *faults) {
	h := faultHarness[BlackholeHarness](f)
	if !f.implements(func(d driver.Locker) bool { _, ok := d.(driver.SharedLocker); return ok }) {
		t.Skip("the driver does not implement driver.SharedLocker")
	}
	a, b, c := f.proxiedClient(h), f.client(), f.client()
	key := f.key("sem")
	ttl := ttlWithin(a, time.Second)
	cut := f.permit(a.Semaphore(key, 2), dlock.WithTTL(ttl))
	kept := f.permit(b.Semaphore(key, 2), dlock.WithTTL(ttl))
	h.Blackhole(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, err := c.Semaphore(key, 2).TryAcquire(f.ctx)
		if err == nil {
			if !isDone(cut) {
				t.Fatal("a third permit was granted before the cut-off holder's Done closed")
			}
			if err := kept.Err(); err != nil {
				t.Fatalf("the reachable holder lost its permit: %v", err)
			}
			if p.Fence() <= cut.Fence() {
				t.Errorf("new permit's fence %d, want more than the lost one's %d", p.Fence(), cut.Fence())
			}
			f.unlock(p)
			break
		}
		if !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryAcquire: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no permit came free 15 s after its holder was cut off")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cut.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Errorf("Err of the cut-off holder = %v, want ErrLost", err)
	}
	f.unlock(kept)
}
