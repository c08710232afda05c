package drivertest

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// RefreshCounts are the refresh calls a Client made through a driver
// wrapped by CountRefreshes.
type RefreshCounts struct {
	// Single counts Refresh calls; Batches counts RefreshBatch calls, Locks
	// the requests they carried and Failed the requests that came back with
	// an error.
	Single, Batches, Locks, Failed atomic.Int64
}

// CountRefreshes wraps d so that a driver's tests can show that a Client
// holding many locks refreshes them in few batches: pass the returned
// driver to dlock.NewClient and read the counts. The returned driver
// forwards every call to d and implements exactly the optional interfaces
// d implements (driver.Notifier, driver.Queuer, driver.BatchRefresher,
// driver.Lister, driver.ForceReleaser), so a Client over it behaves as over
// d: it still waits on notifications and native queues. Refresh and
// RefreshBatch calls are counted.
func CountRefreshes(d driver.Locker) (driver.Locker, *RefreshCounts) {
	c := &countingLocker{Locker: d, counts: &RefreshCounts{}}
	return withOptional(c, d, countingBatch{c}, optionalMask(d)), c.counts
}

// countingLocker counts Refresh calls and forwards the rest of
// driver.Locker.
type countingLocker struct {
	driver.Locker
	counts *RefreshCounts
}

func (c *countingLocker) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	c.counts.Single.Add(1)
	return c.Locker.Refresh(ctx, key, token, ttl)
}

// countingBatch counts RefreshBatch calls; the wrapped driver implements
// driver.BatchRefresher (withOptional uses it only then).
type countingBatch struct{ c *countingLocker }

func (b countingBatch) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	counts := b.c.counts
	counts.Batches.Add(1)
	counts.Locks.Add(int64(len(reqs)))
	errs := b.c.Locker.(driver.BatchRefresher).RefreshBatch(ctx, reqs)
	for _, err := range errs {
		if err != nil {
			counts.Failed.Add(1)
		}
	}
	return errs
}

// optionalMask tells which optional interfaces d implements: bit 0
// driver.Notifier, 1 driver.Queuer, 2 driver.BatchRefresher, 3
// driver.Lister, 4 driver.ForceReleaser.
func optionalMask(d driver.Locker) int {
	_, hasN := d.(driver.Notifier)
	_, hasQ := d.(driver.Queuer)
	_, hasB := d.(driver.BatchRefresher)
	_, hasL := d.(driver.Lister)
	_, hasF := d.(driver.ForceReleaser)
	mask := 0
	for i, has := range []bool{hasN, hasQ, hasB, hasL, hasF} {
		if has {
			mask |= 1 << i
		}
	}
	return mask
}

// withOptional returns a value over l that implements exactly the optional
// interfaces of mask (see optionalMask), b's RefreshBatch for
// driver.BatchRefresher and inner's methods for the others, which inner
// must have. The portable layer finds optional interfaces by type
// assertion, so each combination is its own struct type.
func withOptional(l, inner driver.Locker, b driver.BatchRefresher, mask int) driver.Locker {
	n, _ := inner.(driver.Notifier)
	q, _ := inner.(driver.Queuer)
	li, _ := inner.(driver.Lister)
	f, _ := inner.(driver.ForceReleaser)
	switch mask {
	case 0:
		return struct {
			driver.Locker
		}{l}
	case 1:
		return struct {
			driver.Locker
			driver.Notifier
		}{l, n}
	case 2:
		return struct {
			driver.Locker
			driver.Queuer
		}{l, q}
	case 3:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Queuer
		}{l, n, q}
	case 4:
		return struct {
			driver.Locker
			driver.BatchRefresher
		}{l, b}
	case 5:
		return struct {
			driver.Locker
			driver.Notifier
			driver.BatchRefresher
		}{l, n, b}
	case 6:
		return struct {
			driver.Locker
			driver.Queuer
			driver.BatchRefresher
		}{l, q, b}
	case 7:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Queuer
			driver.BatchRefresher
		}{l, n, q, b}
	case 8:
		return struct {
			driver.Locker
			driver.Lister
		}{l, li}
	case 9:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Lister
		}{l, n, li}
	case 10:
		return struct {
			driver.Locker
			driver.Queuer
			driver.Lister
		}{l, q, li}
	case 11:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Queuer
			driver.Lister
		}{l, n, q, li}
	case 12:
		return struct {
			driver.Locker
			driver.BatchRefresher
			driver.Lister
		}{l, b, li}
	case 13:
		return struct {
			driver.Locker
			driver.Notifier
			driver.BatchRefresher
			driver.Lister
		}{l, n, b, li}
	case 14:
		return struct {
			driver.Locker
			driver.Queuer
			driver.BatchRefresher
			driver.Lister
		}{l, q, b, li}
	case 15:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Queuer
			driver.BatchRefresher
			driver.Lister
		}{l, n, q, b, li}
	case 16:
		return struct {
			driver.Locker
			driver.ForceReleaser
		}{l, f}
	case 17:
		return struct {
			driver.Locker
			driver.Notifier
			driver.ForceReleaser
		}{l, n, f}
	case 18:
		return struct {
			driver.Locker
			driver.Queuer
			driver.ForceReleaser
		}{l, q, f}
	case 19:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Queuer
			driver.ForceReleaser
		}{l, n, q, f}
	case 20:
		return struct {
			driver.Locker
			driver.BatchRefresher
			driver.ForceReleaser
		}{l, b, f}
	case 21:
		return struct {
			driver.Locker
			driver.Notifier
			driver.BatchRefresher
			driver.ForceReleaser
		}{l, n, b, f}
	case 22:
		return struct {
			driver.Locker
			driver.Queuer
			driver.BatchRefresher
			driver.ForceReleaser
		}{l, q, b, f}
	case 23:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Queuer
			driver.BatchRefresher
			driver.ForceReleaser
		}{l, n, q, b, f}
	case 24:
		return struct {
			driver.Locker
			driver.Lister
			driver.ForceReleaser
		}{l, li, f}
	case 25:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Lister
			driver.ForceReleaser
		}{l, n, li, f}
	case 26:
		return struct {
			driver.Locker
			driver.Queuer
			driver.Lister
			driver.ForceReleaser
		}{l, q, li, f}
	case 27:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Queuer
			driver.Lister
			driver.ForceReleaser
		}{l, n, q, li, f}
	case 28:
		return struct {
			driver.Locker
			driver.BatchRefresher
			driver.Lister
			driver.ForceReleaser
		}{l, b, li, f}
	case 29:
		return struct {
			driver.Locker
			driver.Notifier
			driver.BatchRefresher
			driver.Lister
			driver.ForceReleaser
		}{l, n, b, li, f}
	case 30:
		return struct {
			driver.Locker
			driver.Queuer
			driver.BatchRefresher
			driver.Lister
			driver.ForceReleaser
		}{l, q, b, li, f}
	case 31:
		return struct {
			driver.Locker
			driver.Notifier
			driver.Queuer
			driver.BatchRefresher
			driver.Lister
			driver.ForceReleaser
		}{l, n, q, b, li, f}
	}
	panic(fmt.Sprintf("drivertest: optional interface mask %d out of range", mask))
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
