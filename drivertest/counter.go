package drivertest

import (
	"context"
	"sync/atomic"
	"time"

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
