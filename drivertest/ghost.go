package drivertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// freeWait is how soon after a caller gave up the key must be free again.
const freeWait = time.Second

// testUnknownOutcome: a TryLock or Lock whose ctx ends while its request is
// in flight may be granted on the server after the caller gave up. The key
// must then be free again within a second of the caller's return, not held
// by nobody for the TTL. Deadlines and cancellations are spread around the
// measured latency of an acquire, so that some of them land while the
// request is on its way or being applied.
func testUnknownOutcome(t *testing.T, s *suite) {
	a, b, holder := s.client(), s.client(), s.client()
	caps := s.capabilities()
	// A ghost grant would outlive the check by far.
	ttl := max(20*time.Second, caps.MinTTL)
	if caps.MaxTTL > 0 {
		ttl = min(ttl, caps.MaxTTL)
	}
	lat := s.acquireLatency(a)
	t.Logf("median uncontended TryLock: %v", lat)

	fractions := []float64{0.1, 0.3, 0.5, 0.7, 0.85, 1, 1.2, 1.5, 2, 3}
	const rounds = 5 // a timer this short fires a little early or late
	type mode struct {
		name   string
		lock   bool // Lock instead of TryLock
		cancel bool // cancel() instead of a deadline
		held   bool // the key is held, and released while the caller waits
	}
	modes := []mode{
		{name: "TryLock/deadline"},
		{name: "TryLock/cancel", cancel: true},
		{name: "Lock/deadline", lock: true},
		{name: "Lock/cancel", lock: true, cancel: true},
		{name: "Lock/released-meanwhile", lock: true, held: true},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			for i := range rounds * len(fractions) {
				f := fractions[i%len(fractions)]
				d := time.Duration(f * float64(lat))
				key := s.key(fmt.Sprintf("%s-%d", m.name, i))
				// The wait before the key is released, in the
				// released-meanwhile mode: the caller's attempt after
				// the release is in flight when its ctx ends.
				var pause time.Duration
				if m.held {
					pause = max(20*time.Millisecond, 2*lat)
					hl := s.tryLock(holder, key, dlock.WithTTL(ttl))
					time.AfterFunc(pause, func() { _ = hl.Unlock(s.ctx) })
				}
				var (
					ctx    context.Context
					cancel context.CancelFunc
				)
				if m.cancel {
					ctx, cancel = context.WithCancel(s.ctx)
					time.AfterFunc(pause+d, cancel)
				} else {
					ctx, cancel = context.WithTimeout(s.ctx, pause+d)
				}
				var (
					l   *dlock.Lock
					err error
				)
				if m.lock {
					l, err = a.Lock(ctx, key, dlock.WithTTL(ttl))
				} else {
					l, err = a.TryLock(ctx, key, dlock.WithTTL(ttl))
				}
				returned := time.Now()
				cancel()
				if err == nil {
					if uerr := l.Unlock(s.ctx); uerr != nil {
						t.Fatalf("Unlock: %v", uerr)
					}
				} else if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, dlock.ErrNotAcquired) {
					t.Fatalf("%s with ctx ending after %v: %v, want a context error (or ErrNotAcquired)", m.name, pause+d, err)
				}
				s.freeWithin(b, key, returned, freeWait, fmt.Sprintf("%s whose ctx ended after %v (%.2f × latency) returned %v", m.name, pause+d, f, err))
			}
		})
	}
}

// acquireLatency is the median duration of a few uncontended TryLocks.
func (s *suite) acquireLatency(c *dlock.Client) time.Duration {
	s.t.Helper()
	const n = 7
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		l := s.tryLock(c, s.key(fmt.Sprintf("latency-%d", i)))
		ds = append(ds, time.Since(start))
		s.unlock(l)
	}
	slices.Sort(ds)
	return ds[n/2]
}

// freeWithin fails the test unless c can take key before since+d (polling),
// and leaves the key free.
func (s *suite) freeWithin(c *dlock.Client, key string, since time.Time, d time.Duration, what string) {
	s.t.Helper()
	deadline := since.Add(d)
	for {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		l, err := c.TryLock(ctx, key)
		cancel()
		if err == nil {
			s.unlock(l)
			return
		}
		if !errors.Is(err, dlock.ErrNotAcquired) {
			s.t.Fatalf("TryLock(%q) by another client: %v", key, err)
		}
		if time.Now().After(deadline) {
			in, _ := c.Inspect(s.ctx, key)
			s.t.Fatalf("%s: key still held %v later (Inspect: %+v), a grant nobody holds", what, time.Since(since).Round(time.Millisecond), in)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
