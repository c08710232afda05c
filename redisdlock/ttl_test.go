package redisdlock_test

import (
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestTTLRounding drives the driver itself at MinTTL, MinTTL+1ns,
// MaxTTL-1ns and MaxTTL: the server-side lease is the TTL rounded up to a
// whole millisecond, and a key held at MaxTTL excludes a second owner.
// (TTLs outside the bounds never reach the driver: the portable layer
// refuses them, as the conformance subtest TTLBounds checks.)
func TestTTLRounding(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	if got := d.Capabilities().MaxTTL; got != redisengine.MaxTTL {
		t.Fatalf("Capabilities().MaxTTL = %v, want %v", got, redisengine.MaxTTL)
	}
	if redisengine.MaxTTL%time.Millisecond != 0 {
		t.Fatalf("MaxTTL %v is not a whole number of milliseconds", redisengine.MaxTTL)
	}
	tests := []struct {
		name string
		ttl  time.Duration
		// wantMs is the PTTL the server must report at most, and at
		// least wantMs minus a margin for the time the test takes.
		wantMs int64
	}{
		{"MinTTL", redisengine.MinTTL, 10},
		{"MinTTL+1ns", redisengine.MinTTL + 1, 11},
		{"MaxTTL-1ns", redisengine.MaxTTL - 1, redisengine.MaxTTL.Milliseconds()},
		{"MaxTTL", redisengine.MaxTTL, redisengine.MaxTTL.Milliseconds()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := "ttl-" + tc.name
			lock, _, _ := d.Keys(key)
			res, err := d.Acquire(ctx, driver.Request{Key: key, Token: "a", TTL: tc.ttl})
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
	if err != nil || res.Acquired || res.HolderTTL != redisengine.MaxTTL {
		t.Errorf("Acquire = %+v, %v; want refused with HolderTTL %v", res, err, redisengine.MaxTTL)
	}
	in, err := d.Inspect(ctx, "foreign")
	if err != nil || !in.Held || in.TTL != redisengine.MaxTTL {
		t.Errorf("Inspect = %+v, %v; want held with TTL %v", in, err, redisengine.MaxTTL)
	}
}
