package drivertest

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// RefreshCounter wraps a driver that implements driver.BatchRefresher and
// counts the refresh calls a Client makes through it, so a driver's tests can
// show that many held locks are refreshed in few batches. Wrap the driver,
// pass the RefreshCounter to dlock.NewClient, and read the counters.
type RefreshCounter struct {
	driver.Locker
	// Single counts Refresh calls; Batches counts RefreshBatch calls, Locks
	// the requests they carried and Failed the requests that came back with
	// an error.
	Single, Batches, Locks, Failed atomic.Int64
}

// Refresh counts the call and passes it on.
func (c *RefreshCounter) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	c.Single.Add(1)
	return c.Locker.Refresh(ctx, key, token, ttl)
}

// RefreshBatch counts the call and passes it on to the wrapped driver, which
// must implement driver.BatchRefresher.
func (c *RefreshCounter) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	c.Batches.Add(1)
	c.Locks.Add(int64(len(reqs)))
	errs := c.Locker.(driver.BatchRefresher).RefreshBatch(ctx, reqs)
	for _, err := range errs {
		if err != nil {
			c.Failed.Add(1)
		}
	}
	return errs
}

// HoldMany takes n free keys, prefix followed by 0 … n-1, on c with ttl
// (TryLock, auto-refresh on), for a test of many held locks; it fails the
// test if one cannot be taken.
func HoldMany(ctx context.Context, t testing.TB, c *dlock.Client, prefix string, n int, ttl time.Duration) []*dlock.Lock {
	t.Helper()
	locks := make([]*dlock.Lock, n)
	for i := range locks {
		l, err := c.TryLock(ctx, prefix+strconv.Itoa(i), dlock.WithTTL(ttl))
		if err != nil {
			t.Fatalf("TryLock %d: %v", i, err)
		}
		locks[i] = l
	}
	return locks
}

// CheckHeld fails the test if one of locks is no longer held; when says
// when (for the message, as in "after 2s").
func CheckHeld(t testing.TB, locks []*dlock.Lock, when string) {
	t.Helper()
	for i, l := range locks {
		if err := l.Err(); err != nil {
			t.Fatalf("lock %d lost %s: %v", i, when, err)
		}
	}
}
