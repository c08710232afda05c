package drivertest

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// testTTLBounds checks the TTL bounds: the driver declares a MaxTTL, a TTL
// just outside [MinTTL, MaxTTL] is refused with ErrInvalidTTL by Lock,
// TryLock and Refresh and leaves the key free, one just inside is accepted,
// and a lock at MaxTTL really excludes others (an expiry that overflowed
// would let a second owner in).
func testTTLBounds(t *testing.T, s *suite) {
	d, err := s.h.MakeDriver(s.ctx)
	if err != nil {
		t.Fatalf("MakeDriver: %v", err)
	}
	declared := d.Capabilities()
	a := dlock.NewClient(d)
	t.Cleanup(func() { _ = a.Close() })
	if declared.MaxTTL <= 0 {
		t.Errorf("driver Capabilities().MaxTTL = %v, want > 0 (every driver declares the longest TTL it can represent)", declared.MaxTTL)
	}
	b := s.client()
	caps := a.Capabilities()
	if caps.MinTTL < dlock.MinTTL || caps.MaxTTL > dlock.MaxTTL || caps.MaxTTL < caps.MinTTL {
		t.Errorf("Client.Capabilities() TTL bounds [%v, %v], want within [%v, %v]", caps.MinTTL, caps.MaxTTL, dlock.MinTTL, dlock.MaxTTL)
	}
	if declared.MaxTTL > 0 && caps.MaxTTL != min(declared.MaxTTL, dlock.MaxTTL) {
		t.Errorf("Client.Capabilities().MaxTTL = %v, want the driver's %v", caps.MaxTTL, declared.MaxTTL)
	}
	// Go on with bounds that make sense, to see what else breaks.
	caps.MinTTL = max(caps.MinTTL, dlock.MinTTL)
	if caps.MaxTTL <= 0 || caps.MaxTTL > dlock.MaxTTL {
		caps.MaxTTL = dlock.MaxTTL
	}

	refused := []struct {
		name string
		ttl  time.Duration
	}{
		{"MinTTL-1ns", caps.MinTTL - 1},
		{"MaxTTL+1ns", caps.MaxTTL + 1},
		// Near the top of time.Duration, where expiry arithmetic in
		// milliseconds used to wrap (two holders at once on SQLite).
		{"MaxInt64", math.MaxInt64},
		{"MaxInt64-1ms", math.MaxInt64 - time.Millisecond},
	}
	if caps.MinTTL > dlock.MinTTL {
		refused = append(refused, struct {
			name string
			ttl  time.Duration
		}{"portable-MinTTL", dlock.MinTTL})
	}
	// A lock of a valid TTL, whose Refresh is offered the bad TTLs.
	held := s.tryLock(a, s.key("refresh"), dlock.WithTTL(min(max(s.ttl, 10*time.Second, caps.MinTTL), caps.MaxTTL)))
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			key := s.key("refused-" + tc.name)
			l, err := a.TryLock(s.ctx, key, dlock.WithTTL(tc.ttl))
			if !errors.Is(err, dlock.ErrInvalidTTL) {
				t.Errorf("TryLock(TTL %v) = %v, want an error matching ErrInvalidTTL", tc.ttl, err)
			}
			if err == nil {
				// The driver took the key: does the lease exclude?
				if l2, err := b.TryLock(s.ctx, key); err == nil {
					t.Errorf("with TTL %v accepted, a second owner also got the key: two holders at once", tc.ttl)
					_ = l2.Unlock(s.ctx)
				}
				_ = l.Unlock(s.ctx)
			}
			ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			defer cancel()
			l, err = a.Lock(ctx, key, dlock.WithTTL(tc.ttl))
			if !errors.Is(err, dlock.ErrInvalidTTL) {
				t.Errorf("Lock(TTL %v) = %v, want an error matching ErrInvalidTTL", tc.ttl, err)
			}
			if err == nil {
				_ = l.Unlock(s.ctx)
			}
			if err := held.Refresh(s.ctx, tc.ttl); !errors.Is(err, dlock.ErrInvalidTTL) {
				t.Errorf("Refresh(%v) = %v, want an error matching ErrInvalidTTL", tc.ttl, err)
			}
			if err := held.Err(); err != nil {
				t.Errorf("lock after a refused Refresh: Err = %v, want nil", err)
			}
			// Nothing was left behind.
			l, err = b.TryLock(s.ctx, key)
			if err != nil {
				t.Fatalf("TryLock after the refused TTL %v: %v, want the key free", tc.ttl, err)
			}
			s.unlock(l)
		})
	}
	s.wantNotAcquired(b, held.Key())
	s.unlock(held)

	accepted := []struct {
		name string
		ttl  time.Duration
	}{
		{"MinTTL", caps.MinTTL},
		{"MinTTL+1ns", caps.MinTTL + 1},
		{"MaxTTL-1ns", caps.MaxTTL - 1},
		{"MaxTTL", caps.MaxTTL},
	}
	for _, tc := range accepted {
		t.Run("accepted/"+tc.name, func(t *testing.T) {
			key := s.key("accepted-" + tc.name)
			short := tc.ttl < 5*time.Second
			start := time.Now()
			// A short lease is not auto-refreshed (a 10 ms TTL would be
			// refreshed every 3 ms) and may lapse before the checks.
			l, err := a.TryLock(s.ctx, key, dlock.WithTTL(tc.ttl), dlock.WithAutoRefresh(!short))
			if short && errors.Is(err, dlock.ErrNotAcquired) {
				// On a loaded machine the reply can come after so
				// short a lease's validity: not a grant, but the TTL
				// was accepted.
				t.Logf("TryLock(TTL %v): %v (reply after the lease's validity)", tc.ttl, err)
				return
			}
			if err != nil {
				t.Fatalf("TryLock(TTL %v): %v", tc.ttl, err)
			}
			if dl := l.Deadline(); dl.After(start.Add(tc.ttl)) || (!short && !dl.After(time.Now())) {
				t.Errorf("Deadline %v after a TryLock at %v with TTL %v, want within (now, start+TTL]", dl, start, tc.ttl)
			}
			if short {
				if err := l.Unlock(s.ctx); err != nil && !errors.Is(err, dlock.ErrNotHeld) {
					t.Fatalf("Unlock: %v", err)
				}
				return
			}
			s.wantNotAcquired(b, key)
			in, err := b.Inspect(s.ctx, key)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if !in.Held || in.TTL <= tc.ttl/2 || in.TTL > tc.ttl+time.Second {
				t.Errorf("Inspect of a lock with TTL %v = %+v, want held with TTL in (%v, %v]", tc.ttl, in, tc.ttl/2, tc.ttl+time.Second)
			}
			if err := l.Refresh(s.ctx, tc.ttl); err != nil {
				t.Errorf("Refresh(%v): %v", tc.ttl, err)
			}
			s.wantNotAcquired(b, key)
			s.unlock(l)
			l2 := s.tryLock(b, key)
			s.unlock(l2)
		})
	}
}
