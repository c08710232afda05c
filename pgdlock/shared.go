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

// shareState is what sqlShareRows read of a key, for one token.
type shareState struct {
	grants, writers int
	limit           int
	own             int64 // the token's live grant's fence, 0 for none
	soonestGrant    time.Duration
	soonestWriter   time.Duration
}

func soonest(cur, d time.Duration) time.Duration {
	if cur == 0 || d < cur {
		return d
	}
	return cur
}

// AcquireShared implements driver.SharedLocker with one transaction: it
// locks the key's row (making a free one when there is none), refuses a
// live exclusive holder, reads the key's live shared grants and writer
// records, and then renews the token's grant or takes the next fence,
// puts the marker on the key's row and records the grant.
func (d *pgDriver) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Result{}, err
	}
	var (
		res      driver.Result
		mismatch error
	)
	key, token := []byte(req.Key), []byte(req.Token)
	us, meta := sqllease.Micros(req.TTL), cleanText(req.Metadata)
	err := inTx(ctx, d.q, func(r runner) error {
		res, mismatch = driver.Result{}, nil
		var (
			excl, marker bool
			leftUS       int64
		)
		if _, err := r.queryRow(ctx, d.st.shareLock, []any{key}, &excl, &marker, &leftUS); err != nil {
			return err
		}
		if excl {
			res.HolderTTL = max(sqllease.FromMicros(leftUS), time.Millisecond)
			return nil
		}
		var st shareState
		err := r.query(ctx, d.st.shareRows, []any{key}, func(scan func(dest ...any) error) error {
			var (
				writer    bool
				tok       []byte
				fence, us int64
				limit     int
			)
			if err := scan(&writer, &tok, &fence, &us, &limit); err != nil {
				return err
			}
			ttl := max(sqllease.FromMicros(us), time.Microsecond)
			if writer {
				st.writers++
				st.soonestWriter = soonest(st.soonestWriter, ttl)
				return nil
			}
			st.grants++
			st.limit = limit
			st.soonestGrant = soonest(st.soonestGrant, ttl)
			if string(tok) == req.Token {
				st.own = fence
			}
			return nil
		})
		if err != nil {
			return err
		}
		if st.grants > 0 && st.limit != req.Limit {
			mismatch = fmt.Errorf("%w: pgdlock: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, req.Key, st.limit, req.Limit)
			return nil
		}
		if st.own > 0 {
			if _, err := r.exec(ctx, d.st.shareRenew, key, token, us, meta, req.Limit); err != nil {
				return err
			}
			res = driver.Result{Acquired: true, Fence: uint64(st.own)}
			return nil
		}
		if st.writers > 0 || (req.Limit > 0 && st.grants >= req.Limit) {
			res.HolderTTL = st.soonestGrant
			if res.HolderTTL == 0 {
				res.HolderTTL = st.soonestWriter
			}
			return nil
		}
		var fence int64
		if _, err := r.queryRow(ctx, d.st.shareGrant, []any{key, token, us, meta, req.Limit}, &fence); err != nil {
			return err
		}
		if fence <= 0 {
			return fmt.Errorf("table %s returned fence %d", d.Table, fence)
		}
		res = driver.Result{Acquired: true, Fence: uint64(fence)}
		return nil
	})
	switch {
	case err != nil && contention(err):
		return driver.Result{HolderTTL: time.Millisecond}, nil
	case err != nil:
		return driver.Result{}, d.Wrap("acquire shared", err)
	case mismatch != nil:
		return driver.Result{}, mismatch
	}
	return res, nil
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

// releaseShare deletes token's shared grant and writer record of key in
// one transaction; when a live grant went, it then locks the key's row and
// makes it follow the grants left (sqlShareSync). Waiters are notified (on
// commit) when anything went.
func (d *pgDriver) releaseShare(ctx context.Context, key, token string) error {
	var held bool
	err := inTx(ctx, d.q, func(r runner) error {
		held = false
		found := false
		err := r.query(ctx, d.st.shareDelete, []any{[]byte(key), []byte(token)}, func(scan func(dest ...any) error) error {
			var writer, live bool
			if err := scan(&writer, &live); err != nil {
				return err
			}
			found = true
			held = held || (!writer && live)
			return nil
		})
		if err != nil || !found {
			return err
		}
		if held {
			if _, err := r.exec(ctx, d.st.lockRow, []byte(key)); err != nil {
				return err
			}
			if _, err := r.exec(ctx, d.st.shareSync, []byte(key)); err != nil {
				return err
			}
		}
		if d.lis != nil {
			if _, err := r.exec(ctx, sqlNotify, d.lis.channel, payload(key)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return d.Wrap("release", err)
	}
	if !held {
		return sqllease.NotHeld(key)
	}
	return nil
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

// Holders implements driver.SharedLocker.
func (p pollOnly) Holders(ctx context.Context, key string) (driver.Holders, error) {
	return p.Locker.(*pgDriver).Holders(ctx, key)
}
