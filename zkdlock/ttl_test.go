package zkdlock

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// TestTTLBounds: at the bounds Capabilities declares, MinTTL and MaxTTL
// (the session timeout the server granted) and 1 ns inside them, every
// entry point of the driver grants the lock with a validity that ends
// before the session could expire, refreshes it, and leaves nothing behind.
// (A TTL outside the bounds never reaches the driver: dlock refuses it, as
// the conformance suite's TTLBounds checks.)
func TestTTLBounds(t *testing.T) {
	z := startStandalone(t)
	const session = 3 * time.Second
	d := openDriver(t, "zk://"+z.Addr()+"/ttl-bounds?session_timeout="+session.String())
	caps := d.Capabilities()
	if caps.MinTTL != MinTTL || caps.MaxTTL != session {
		t.Fatalf("Capabilities TTL bounds [%v, %v], want [%v, %v] (MinTTL, the granted session timeout)", caps.MinTTL, caps.MaxTTL, MinTTL, session)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	tests := []struct {
		name string
		ttl  time.Duration
	}{
		{"MinTTL", MinTTL},
		{"MinTTL+1ns", MinTTL + 1},
		{"MaxTTL-1ns", session - 1},
		{"MaxTTL", session},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := "k-" + tc.name
			for _, queued := range []bool{false, true} {
				req := driver.Request{Key: key, Token: "tok-" + tc.name, TTL: tc.ttl}
				acquire, what := d.Acquire, "Acquire"
				if queued {
					acquire, what = d.AcquireQueued, "AcquireQueued"
				}
				before := time.Now()
				res, err := acquire(ctx, req)
				after := time.Now()
				if err != nil || !res.Acquired {
					t.Fatalf("%s of a free key with TTL %v: %+v, %v", what, tc.ttl, res, err)
				}
				// The validity counts from the request's send time; the
				// session lives at least a session timeout after it, and
				// TTL ≤ session timeout.
				lo, hi := driver.ValidUntil(before, tc.ttl), driver.ValidUntil(after, tc.ttl)
				if res.ValidUntil.Before(lo) || res.ValidUntil.After(hi) {
					t.Errorf("%s with TTL %v: ValidUntil %v, want within [%v, %v]", what, tc.ttl, res.ValidUntil, lo, hi)
				}
				if res.ValidUntil.After(after.Add(session)) {
					t.Errorf("%s with TTL %v: ValidUntil after the session could expire", what, tc.ttl)
				}
				if tc.ttl >= time.Second {
					if err := d.Refresh(ctx, key, req.Token, tc.ttl); err != nil {
						t.Errorf("Refresh with TTL %v: %v", tc.ttl, err)
					}
					if errs := d.RefreshBatch(ctx, []driver.RefreshRequest{{Key: key, Token: req.Token, TTL: tc.ttl}}); errs[0] != nil {
						t.Errorf("RefreshBatch with TTL %v: %v", tc.ttl, errs[0])
					}
				}
				if err := d.Release(ctx, key, req.Token); err != nil && !(tc.ttl < time.Second && errors.Is(err, driver.ErrNotHeld)) {
					t.Errorf("Release: %v", err)
				}
			}
			// Nothing left behind (a lapsed short lease's node is deleted
			// in the background: allow it a moment).
			deadline := time.Now().Add(2 * time.Second)
			for {
				in, err := d.Inspect(ctx, key)
				if err == nil && !in.Held && in.Waiters == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Inspect after: %+v, %v; want free, no waiters", in, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestMaxTTLExcludes: a lock at MaxTTL, the session timeout, without
// auto-refresh holds the key against another client for its TTL, and the
// driver frees it when the TTL runs out: the lease neither ends early nor
// outlives the TTL until the session's expiry.
func TestMaxTTLExcludes(t *testing.T) {
	z := startStandalone(t)
	const session = 2 * time.Second
	url := "zk://" + z.Addr() + "/ttl-max?session_timeout=" + session.String()
	a, b := openClient(t, url), openClient(t, url)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	l, err := a.TryLock(ctx, "k", dlock.WithTTL(session), dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatalf("TryLock with TTL = MaxTTL %v: %v", session, err)
	}
	// The session lives at least a session timeout after the server got
	// the request, which it got before TryLock returned.
	if dl, lo, hi := l.Deadline(), driver.ValidUntil(start, session), driver.ValidUntil(time.Now(), session); dl.Before(lo) || dl.After(hi) {
		t.Errorf("Deadline %v, want within [%v, %v]: TTL − drift after the request", dl, lo, hi)
	}
	// Held until the validity deadline.
	for time.Now().Before(l.Deadline().Add(-100 * time.Millisecond)) {
		if l2, err := b.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
			if err == nil {
				_ = l2.Unlock(ctx)
			}
			t.Fatalf("TryLock %v after a grant with TTL %v = %v, want ErrNotAcquired", time.Since(start), session, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Free soon after the TTL, well before another session timeout.
	wctx, wcancel := context.WithTimeout(ctx, session+session/2)
	defer wcancel()
	l2, err := b.Lock(wctx, "k")
	if err != nil {
		t.Fatalf("Lock after the TTL ran out: %v (%v after the grant)", err, time.Since(start))
	}
	if got := time.Since(start); got < session-driver.Drift(session) {
		t.Errorf("key free %v after a grant with TTL %v, want not before the TTL", got, session)
	}
	if l2.Fence() <= l.Fence() {
		t.Errorf("fence %d after the lapsed lease's %d, want greater", l2.Fence(), l.Fence())
	}
	_ = l2.Unlock(ctx)
}

// TestSessionTimeoutOption: Options.SessionTimeout must be one ZooKeeper
// can grant and leave room for a TTL of at least MinTTL; MaxTTL is its
// whole milliseconds (the unit the server grants it in).
func TestSessionTimeoutOption(t *testing.T) {
	z := startStandalone(t)
	conn := connect(t, z.Addrs(), 10*time.Second, nil)
	tests := []struct {
		timeout, maxTTL time.Duration // maxTTL 0: refused
	}{
		{MinTTL - 1, 0},
		{time.Millisecond, 0},
		{MinTTL, MinTTL},
		{1500*time.Millisecond + 999*time.Microsecond, 1500 * time.Millisecond},
		{math.MaxInt32 * time.Millisecond, math.MaxInt32 * time.Millisecond},
		{math.MaxInt32*time.Millisecond + time.Millisecond, 0},
		{math.MaxInt64, 0},
	}
	for _, tc := range tests {
		d, err := NewDriver(conn, Options{SessionTimeout: tc.timeout})
		if tc.maxTTL == 0 {
			if !errors.Is(err, dlock.ErrInvalidOption) {
				t.Errorf("NewDriver(SessionTimeout %v) = %v, want an error matching ErrInvalidOption", tc.timeout, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewDriver(SessionTimeout %v): %v", tc.timeout, err)
			continue
		}
		if got := d.Capabilities().MaxTTL; got != tc.maxTTL {
			t.Errorf("SessionTimeout %v: MaxTTL = %v, want %v", tc.timeout, got, tc.maxTTL)
		}
		_ = d.Close()
	}
}
