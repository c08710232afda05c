package pgdlock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

var (
	_ driver.SharedLocker = (*pgDriver)(nil)
	_ driver.SharedLocker = pollOnly{}
)

// sharesTable is the companion table of t: its shared grants and waiting
// writers.
func sharesTable(t sqllease.Table) sqllease.Table { return t.Shares() }

// staleTries bounds how many times a shared statement is sent again
// after it found the key's row changed since its snapshot (verdict 's'):
// each such round means another grant or release of the key committed
// meanwhile.
const staleTries = 16

// AcquireShared implements driver.SharedLocker with one statement
// (sqlAcquireShared): it judges the key's row and live shared grants,
// and renews the token's grant or takes the next fence, puts the marker
// on the key's row and records the grant. When the key's row changed
// between the statement's snapshot and its lock it changes nothing and is
// sent again (see sqlShareState).
func (d *pgDriver) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Result{}, err
	}
	args := []any{[]byte(req.Key), []byte(req.Token), sqllease.Micros(req.TTL), cleanText(req.Metadata), req.Limit}
	for range staleTries {
		var (
			verdict         string
			fence, holderUS int64
			limit           int
		)
		_, err := d.q.lockedQueryRow(ctx, d.st.lockRow, 1, d.st.acquireShared, args, &verdict, &fence, &holderUS, &limit)
		switch {
		case err != nil && contention(err):
			return driver.Result{HolderTTL: time.Millisecond}, nil
		case err != nil:
			return driver.Result{}, d.Wrap("acquire shared", err)
		}
		switch verdict {
		case "s":
			continue
		case "m":
			return driver.Result{}, fmt.Errorf("%w: pgdlock: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, req.Key, limit, req.Limit)
		case "x", "f":
			return driver.Result{HolderTTL: max(sqllease.FromMicros(holderUS), time.Millisecond)}, nil
		}
		if fence <= 0 {
			return driver.Result{}, fmt.Errorf("pgdlock: acquire shared: table %s returned fence %d", d.Table, fence)
		}
		return driver.Result{Acquired: true, Fence: uint64(fence)}, nil
	}
	return driver.Result{HolderTTL: time.Millisecond}, nil
}

// acquireWaiting is Acquire for an attempt with Hints.Wait, in one
// statement (sqlAcquireWaiting).
func (d *pgDriver) acquireWaiting(ctx context.Context, req driver.Request) (driver.Result, error) {
	var (
		acquired, recorded bool
		fence, holderUS    int64
	)
	args := []any{[]byte(req.Key), []byte(req.Token), sqllease.Micros(req.TTL), cleanText(req.Metadata)}
	found, err := d.q.queryRow(ctx, d.st.acquireWaiting, args, &acquired, &fence, &holderUS, &recorded)
	switch {
	case err != nil && contention(err):
		return driver.Result{}, nil
	case err != nil:
		return driver.Result{}, d.Wrap("acquire", err)
	case !found:
		return driver.Result{}, nil
	case !acquired:
		if recorded {
			d.writers.Add(req.Key, req.Token)
		}
		return driver.Result{HolderTTL: sqllease.FromMicros(holderUS), WriterWaiting: recorded}, nil
	case fence <= 0:
		return driver.Result{}, fmt.Errorf("pgdlock: acquire: table %s returned fence %d", d.Table, fence)
	}
	d.writers.Remove(req.Key, req.Token)
	return driver.Result{Acquired: true, Fence: uint64(fence)}, nil
}

var _ driver.ShareKeeper = (*pgDriver)(nil)

// RefreshShared implements driver.ShareKeeper with one statement (Refresh
// tries the exclusive lease first: two).
func (d *pgDriver) RefreshShared(ctx context.Context, key, token string, ttl time.Duration) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	return d.refreshShare(ctx, key, token, ttl)
}

// ReleaseShared implements driver.ShareKeeper with one statement (Release
// tries the exclusive lease first: two).
func (d *pgDriver) ReleaseShared(ctx context.Context, key, token string) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	return d.releaseShare(ctx, key, token)
}

// refreshShare extends token's live shared grant of key, and the marker.
func (d *pgDriver) refreshShare(ctx context.Context, key, token string, ttl time.Duration) error {
	var one int
	found, err := d.q.queryRow(ctx, d.st.shareRefresh, []any{[]byte(key), []byte(token), sqllease.Micros(ttl)}, &one)
	if err != nil {
		return d.Wrap("refresh", err)
	}
	if !found {
		return sqllease.NotHeld(key)
	}
	return nil
}

// releaseShare deletes token's shared grant and writer record of key,
// making the key's row follow the grants left, in one statement
// (sqlReleaseShare), sent again while it finds the row changed since its
// snapshot. Waiters are notified (on commit) when anything went.
func (d *pgDriver) releaseShare(ctx context.Context, key, token string) error {
	st, args := d.st.releaseShare, []any{[]byte(key), []byte(token)}
	if d.lis != nil {
		st, args = d.st.releaseShareNotify, append(args, d.lis.channel, payload(key))
	}
	for range staleTries {
		var (
			live, synced bool
			deleted, n   int64
		)
		if _, err := d.q.lockedQueryRow(ctx, d.st.lockRow, 1, st, args, &live, &synced, &deleted, &n); err != nil {
			return d.Wrap("release", err)
		}
		switch {
		case !live:
			return sqllease.NotHeld(key)
		case synced:
			return nil
		}
	}
	return d.Wrap("release", errors.New("the key's row kept changing"))
}

// Holders implements driver.SharedLocker with one statement.
func (d *pgDriver) Holders(ctx context.Context, key string) (driver.Holders, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Holders{}, err
	}
	var (
		h      driver.Holders
		newest int64
	)
	err := d.q.query(ctx, d.st.holders, []any{[]byte(key)}, func(scan func(dest ...any) error) error {
		var (
			kind, limit int
			fence, us   int64
			meta        string
		)
		if err := scan(&kind, &fence, &us, &meta, &limit); err != nil {
			return err
		}
		switch kind {
		case 2:
			h.WritersWaiting++
			return nil
		case 3:
			return nil // a queued share
		case 1:
			if fence > newest {
				newest, h.Limit = fence, limit
			}
		}
		h.Holders = append(h.Holders, driver.Holder{Shared: kind == 1, Fence: uint64(max(fence, 0)), TTL: sqllease.FromMicros(us), Metadata: meta})
		return nil
	})
	if err != nil {
		return driver.Holders{}, d.Wrap("holders", err)
	}
	slices.SortFunc(h.Holders, func(a, b driver.Holder) int { return cmp.Compare(a.Fence, b.Fence) })
	return h, nil
}

// refreshShares refreshes, with one statement, the shared grants among
// items whose exclusive refresh found nothing (errs[i] matching
// ErrNotHeld), and clears their errors.
func (d *pgDriver) refreshShares(ctx context.Context, items []driver.RefreshRequest, errs []error) {
	var left []driver.RefreshRequest
	var idx []int
	for i, err := range errs {
		if errors.Is(err, driver.ErrNotHeld) {
			left, idx = append(left, items[i]), append(idx, i)
		}
	}
	if len(left) == 0 {
		return
	}
	keys, tokens, ttls := batchLists(left)
	done := make([]bool, len(left))
	err := d.q.query(ctx, d.st.shareRefreshBatch, []any{keys, tokens, ttls}, func(scan func(...any) error) error {
		var i int64
		if err := scan(&i); err != nil {
			return err
		}
		if i < 1 || i > int64(len(left)) {
			return fmt.Errorf("refresh returned position %d of %d", i, len(left))
		}
		done[i-1] = true
		return nil
	})
	for j, i := range idx {
		switch {
		case err != nil:
			errs[i] = d.Wrap("refresh", err)
		case done[j]:
			errs[i] = nil
		}
	}
}

// forceShares deletes every shared grant and writer record of key, locks
// the key's row and deletes what was granted meanwhile, within tx r:
// the caller then frees the row (the marker) as ForceRelease does.
func (d *pgDriver) forceShares(ctx context.Context, r runner, key []byte) error {
	if _, err := r.exec(ctx, d.st.shareForce, key); err != nil {
		return err
	}
	if _, err := r.exec(ctx, d.st.lockRow, key); err != nil {
		return err
	}
	_, err := r.exec(ctx, d.st.shareForce, key)
	return err
}

// AcquireShared implements driver.SharedLocker.
func (p pollOnly) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	return p.Locker.(*pgDriver).AcquireShared(ctx, req)
}

// RefreshShared implements driver.ShareKeeper.
func (p pollOnly) RefreshShared(ctx context.Context, key, token string, ttl time.Duration) error {
	return p.Locker.(*pgDriver).RefreshShared(ctx, key, token, ttl)
}

// ReleaseShared implements driver.ShareKeeper.
func (p pollOnly) ReleaseShared(ctx context.Context, key, token string) error {
	return p.Locker.(*pgDriver).ReleaseShared(ctx, key, token)
}

// Holders implements driver.SharedLocker.
func (p pollOnly) Holders(ctx context.Context, key string) (driver.Holders, error) {
	return p.Locker.(*pgDriver).Holders(ctx, key)
}
