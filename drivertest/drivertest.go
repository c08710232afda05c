package drivertest

import (
	"context"
	"testing"
	"time"
)

// RunConformanceTests runs the portable contract against a driver. Each
// subtest makes its own harness with newHarness and uses keys of its own.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s *suite)
	}{
		{"Exclusion", testExclusion},
		{"TryLockContention", testTryLockContention},
		{"UnlockIdempotent", testUnlockIdempotent},
		{"ExpiryAndTakeover", testExpiryAndTakeover},
		{"RefreshExtends", testRefreshExtends},
		{"AfterExpiryNotHeld", testAfterExpiryNotHeld},
		{"AutoRefresh", testAutoRefresh},
		{"DoneAndErr", testDoneAndErr},
		{"Fence", testFence},
		{"WaiterLeavesNothing", testWaiterLeavesNothing},
		{"UnknownOutcome", testUnknownOutcome},
		{"HandOff", testHandOff},
		{"Keys", testKeys},
		{"InvalidInput", testInvalidInput},
		{"TTLBounds", testTTLBounds},
		{"Inspect", testInspect},
		{"Do", testDo},
		{"DoLost", testDoLost},
		{"Close", testClose},
		{"ReacquireWithToken", testReacquireWithToken},
		{"FIFO", testFIFO},
		{"FencedResourceOracle", testFencedResourceOracle},
		{"DriverForeignToken", testDriverForeignToken},
		{"DriverFences", testDriverFences},
		{"DriverTTLBounds", testDriverTTLBounds},
		{"DriverByteKeys", testDriverByteKeys},
		{"List", testList},
		{"ForceRelease", testForceRelease},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
			defer cancel()
			h, err := newHarness(ctx, t)
			if err != nil {
				t.Fatalf("making harness: %v", err)
			}
			t.Cleanup(h.Close)
			s := &suite{t: t, ctx: ctx, h: h, ttl: 300 * time.Millisecond, prefix: uniquePrefix(t)}
			if st, ok := h.(ShortTTLer); ok {
				s.ttl = st.ShortTTL()
			}
			tc.fn(t, s)
		})
	}
}
