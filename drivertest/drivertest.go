package drivertest

import (
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
		{"MinHold", testMinHold},
		{"MaxHold", testMaxHold},
		{"ElectionTerms", testElectionTerms},
		{"ElectionProclaim", testElectionProclaim},
		{"ElectionObserve", testElectionObserve},
		{"ElectionLead", testElectionLead},
		{"ElectionResignHandOff", testElectionResignHandOff},
		{"Close", testClose},
		{"ReacquireWithToken", testReacquireWithToken},
		{"FIFO", testFIFO},
		{"FencedResourceOracle", testFencedResourceOracle},
		{"DriverForeignToken", testDriverForeignToken},
		{"DriverFences", testDriverFences},
		{"DriverTTLBounds", testDriverTTLBounds},
		{"DriverBackendName", testDriverBackendName},
		{"DriverByteKeys", testDriverByteKeys},
		{"List", testList},
		{"ForceRelease", testForceRelease},
		{"LockManyNoDeadlock", testLockManyNoDeadlock},
		{"LockManyAllOrNothing", testLockManyAllOrNothing},
		{"LockManyInput", testLockManyInput},
		{"DriverAcquireMany", testDriverAcquireMany},
		{"DriverSetMetadata", testDriverSetMetadata},
		{"SemaphoreLimit", testSemaphoreLimit},
		{"SemaphoreLimitMismatch", testSemaphoreLimitMismatch},
		{"RWExclusion", testRWExclusion},
		{"WriterPreference", testWriterPreference},
		{"WriterGivesUp", testWriterGivesUp},
		{"SharedHandOff", testSharedHandOff},
		{"DriverShared", testDriverShared},
		{"DriverShareKeeper", testDriverShareKeeper},
		{"DriverSharedQueued", testDriverSharedQueued},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newSuite(t, newHarness, 90*time.Second))
		})
	}
}
