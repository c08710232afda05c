package redlock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/redlock"
)

// TestTTLBounds drives the driver itself (not the portable layer, which
// checks the same bounds first) at MinTTL±1ns and MaxTTL±1ns: outside the
// bounds Acquire, Refresh and RefreshBatch fail with ErrInvalidTTL and
// write nothing on any node; inside, a majority holds the key, and a key
// held at MaxTTL excludes a second owner.
func TestTTLBounds(t *testing.T) {
	nodes := startNodes(t, 3)
	ctx := testCtx(t, 30*time.Second)
	_, d := newClient(t, nodes, redlock.Options{})
	cs := rawClients(t, nodes)
	if got := d.Capabilities().MaxTTL; got != redlock.MaxTTL {
		t.Fatalf("Capabilities().MaxTTL = %v, want %v", got, redlock.MaxTTL)
	}
	tests := []struct {
		name string
		ttl  time.Duration
		ok   bool
	}{
		{"MinTTL-1ns", redlock.MinTTL - 1, false},
		{"MinTTL+1ns", redlock.MinTTL + 1, true},
		{"MaxTTL-1ns", redlock.MaxTTL - 1, true},
		{"MaxTTL", redlock.MaxTTL, true},
		{"MaxTTL+1ns", redlock.MaxTTL + 1, false},
		{"MaxInt64", 1<<63 - 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := "ttl-" + tc.name
			res, err := d.Acquire(ctx, driver.Request{Key: key, Token: "a", TTL: tc.ttl})
			if !tc.ok {
				if !errors.Is(err, dlock.ErrInvalidTTL) {
					t.Fatalf("Acquire(TTL %v) = %+v, %v; want ErrInvalidTTL", tc.ttl, res, err)
				}
				if got := count(holders(t, ctx, cs, key), ""); got != len(nodes) {
					t.Fatalf("%d of %d nodes free after a refused TTL, want all", got, len(nodes))
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
			if tc.ttl < time.Second {
				// Accepted; a lease this short may run out before a
				// majority has answered, which is ErrUnavailable (given
				// back), not a refused TTL.
				if errors.Is(err, dlock.ErrInvalidTTL) || (err != nil && !errors.Is(err, dlock.ErrUnavailable)) || (err == nil && !res.Acquired) {
					t.Fatalf("Acquire(TTL %v) = %+v, %v; want granted, or ErrUnavailable past its validity", tc.ttl, res, err)
				}
				return
			}
			if err != nil || !res.Acquired {
				t.Fatalf("Acquire(TTL %v) = %+v, %v; want granted", tc.ttl, res, err)
			}
			t.Cleanup(func() { _ = d.Release(ctx, key, "a") })
			if until := time.Until(res.ValidUntil); until < tc.ttl-tc.ttl/50-time.Minute {
				t.Errorf("ValidUntil in %v, want about %v less the drift", until, tc.ttl)
			}
			other, err := d.Acquire(ctx, driver.Request{Key: key, Token: "b", TTL: time.Second})
			if err != nil || other.Acquired {
				t.Fatalf("second owner: Acquire = %+v, %v; want refused", other, err)
			}
			in, err := d.Inspect(ctx, key)
			if err != nil || !in.Held || in.TTL < tc.ttl-time.Minute || in.TTL > tc.ttl+time.Millisecond {
				t.Errorf("Inspect = %+v, %v; want held for about %v", in, err, tc.ttl)
			}
			if err := d.Refresh(ctx, key, "a", tc.ttl); err != nil {
				t.Errorf("Refresh(TTL %v): %v", tc.ttl, err)
			}
			if errs := d.RefreshBatch(ctx, []driver.RefreshRequest{{Key: key, Token: "a", TTL: tc.ttl}}); errs[0] != nil {
				t.Errorf("RefreshBatch(TTL %v): %v", tc.ttl, errs[0])
			}
		})
	}
}
