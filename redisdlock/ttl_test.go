package redisdlock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestTTLBounds drives the driver itself (not the portable layer, which
// checks the same bounds first) at MinTTL±1ns and MaxTTL±1ns: outside the
// bounds Acquire, Refresh and RefreshBatch fail with ErrInvalidTTL and
// write nothing; inside, the server-side lease is the TTL rounded up to a
// whole millisecond, and a key held at MaxTTL excludes a second owner.
func TestTTLBounds(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	if got := d.Capabilities().MaxTTL; got != redisdlock.MaxTTL {
		t.Fatalf("Capabilities().MaxTTL = %v, want %v", got, redisdlock.MaxTTL)
	}
	if redisdlock.MaxTTL%time.Millisecond != 0 {
		t.Fatalf("MaxTTL %v is not a whole number of milliseconds", redisdlock.MaxTTL)
	}
	tests := []struct {
		name string
		ttl  time.Duration
		ok   bool
		// wantMs is the PTTL the server must report at most, and at
		// least wantMs minus a margin for the time the test takes.
		wantMs int64
	}{
		{"MinTTL-1ns", redisdlock.MinTTL - 1, false, 0},
		{"MinTTL", redisdlock.MinTTL, true, 10},
		{"MinTTL+1ns", redisdlock.MinTTL + 1, true, 11},
		{"MaxTTL-1ns", redisdlock.MaxTTL - 1, true, redisdlock.MaxTTL.Milliseconds()},
		{"MaxTTL", redisdlock.MaxTTL, true, redisdlock.MaxTTL.Milliseconds()},
		{"MaxTTL+1ns", redisdlock.MaxTTL + 1, false, 0},
		{"MaxInt64", 1<<63 - 1, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := "ttl-" + tc.name
			lock, _, _ := d.Keys(key)
			res, err := d.Acquire(ctx, driver.Request{Key: key, Token: "a", TTL: tc.ttl})
			if !tc.ok {
				if !errors.Is(err, dlock.ErrInvalidTTL) {
					t.Fatalf("Acquire(TTL %v) = %+v, %v; want ErrInvalidTTL", tc.ttl, res, err)
				}
				if n, err := rdb.Exists(ctx, lock).Result(); err != nil || n != 0 {
					t.Fatalf("EXISTS after a refused TTL = %d, %v; want 0", n, err)
				}
				if err := d.Refresh(ctx, key, "a", tc.ttl); !errors.Is(err, dlock.ErrInvalidTTL) {
					t.Errorf("Refresh(TTL %v) = %v, want ErrInvalidTTL", tc.ttl, err)
				}
				errs := d.RefreshBatch(ctx, []driver.RefreshRequest{{Key: key, Token: "a", TTL: tc.ttl}})
				if !errors.Is(errs[0], dlock.ErrInvalidTTL) {
					t.Errorf("RefreshBatch(TTL %v) = %v, want ErrInvalidTTL", tc.ttl, errs[0])
				}
				return
			}
			if err != nil || !res.Acquired {
				t.Fatalf("Acquire(TTL %v) = %+v, %v; want granted", tc.ttl, res, err)
			}
			t.Cleanup(func() { _ = d.Release(ctx, key, "a") })
			checkPTTL := func(what string) {
				t.Helper()
				got, err := rdb.PTTL(ctx, lock).Result()
				if err != nil {
					t.Fatalf("PTTL after %s: %v", what, err)
				}
				ms := got.Milliseconds()
				if tc.wantMs > 1000 && (ms > tc.wantMs || ms < tc.wantMs-10_000) {
					t.Errorf("PTTL after %s = %d ms, want about %d ms", what, ms, tc.wantMs)
				}
				if tc.wantMs <= 1000 && ms > tc.wantMs {
					t.Errorf("PTTL after %s = %d ms, want at most %d ms", what, ms, tc.wantMs)
				}
			}
			checkPTTL("Acquire")
			if tc.wantMs < 1000 {
				return // may have expired already
			}
			// A second owner is refused and told the holder's TTL.
			other, err := d.Acquire(ctx, driver.Request{Key: key, Token: "b", TTL: time.Second})
			if err != nil || other.Acquired {
				t.Fatalf("second owner: Acquire = %+v, %v; want refused", other, err)
			}
			if other.HolderTTL < tc.ttl-time.Minute || other.HolderTTL > tc.ttl+time.Millisecond {
				t.Errorf("second owner: HolderTTL = %v, want about %v", other.HolderTTL, tc.ttl)
			}
			in, err := d.Inspect(ctx, key)
			if err != nil || !in.Held || in.TTL < tc.ttl-time.Minute || in.TTL > tc.ttl+time.Millisecond {
				t.Errorf("Inspect = %+v, %v; want held for about %v", in, err, tc.ttl)
			}
			if err := d.Refresh(ctx, key, "a", tc.ttl); err != nil {
				t.Errorf("Refresh(TTL %v): %v", tc.ttl, err)
			}
			checkPTTL("Refresh")
			if errs := d.RefreshBatch(ctx, []driver.RefreshRequest{{Key: key, Token: "a", TTL: tc.ttl}}); errs[0] != nil {
				t.Errorf("RefreshBatch(TTL %v): %v", tc.ttl, errs[0])
			}
			checkPTTL("RefreshBatch")
		})
	}
}

// TestMaxTTLClient takes a lock at MaxTTL through the portable layer: it is
// granted, a second client cannot take the key, and MaxTTL+1ns is refused.
func TestMaxTTLClient(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	a := openURL(t, srv.URL())
	b := openURL(t, srv.URL())
	l, err := a.TryLock(ctx, "max", dlock.WithTTL(redisdlock.MaxTTL))
	if err != nil {
		t.Fatalf("TryLock(MaxTTL): %v", err)
	}
	if _, err := b.TryLock(ctx, "max", dlock.WithTTL(time.Second)); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("second owner: TryLock = %v, want ErrNotAcquired", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if _, err := b.TryLock(ctx, "max2", dlock.WithTTL(redisdlock.MaxTTL+1)); !errors.Is(err, dlock.ErrInvalidTTL) {
		t.Fatalf("TryLock(MaxTTL+1ns) = %v, want ErrInvalidTTL", err)
	}
}

// TestHolderTTLBeyondMaxTTL: a key set by another client with an expiry
// longer than any time.Duration is reported as held for MaxTTL, not for a
// wrapped-around (negative or short) duration.
func TestHolderTTLBeyondMaxTTL(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	lock, _, _ := d.Keys("foreign")
	// 10^15 ms: about 31,700 years.
	if err := rdb.Do(ctx, "SET", lock, "someone", "PX", "1000000000000000").Err(); err != nil {
		t.Fatalf("SET PX: %v", err)
	}
	res, err := d.Acquire(ctx, driver.Request{Key: "foreign", Token: "a", TTL: time.Second})
	if err != nil || res.Acquired || res.HolderTTL != redisdlock.MaxTTL {
		t.Errorf("Acquire = %+v, %v; want refused with HolderTTL %v", res, err, redisdlock.MaxTTL)
	}
	in, err := d.Inspect(ctx, "foreign")
	if err != nil || !in.Held || in.TTL != redisdlock.MaxTTL {
		t.Errorf("Inspect = %+v, %v; want held with TTL %v", in, err, redisdlock.MaxTTL)
	}
}
