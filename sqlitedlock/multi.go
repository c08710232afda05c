package sqlitedlock

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

var _ driver.MultiLocker = (*sqliteDriver)(nil)

// errRefused rolls back an AcquireMany that could not take every key.
var errRefused = errors.New("a key is held")

// AcquireMany implements driver.MultiLocker with one (immediate)
// transaction: the exclusive upsert of every key, in key order; when any
// is refused the transaction rolls back, after reading how long what
// stood in the way holds each refused key.
func (d *sqliteDriver) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return nil, err
	}
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(reqs[a].Key, reqs[b].Key) })
	res := make([]driver.Result, len(reqs))
	var refused, rolledBack bool
	err := d.inTx(ctx, "acquire", func(tx *sql.Tx) error {
		clear(res)
		refused, rolledBack = false, false
		stmt := tx.StmtContext(ctx, d.acquire)
		for _, i := range order {
			r := reqs[i]
			var fence int64
			ok, err := sqllease.Found(stmt.QueryRowContext(ctx, r.Key, r.Token, millis(r.TTL), r.Metadata).Scan(&fence), sql.ErrNoRows)
			if err != nil {
				return err
			}
			if ok {
				if fence <= 0 {
					return fmt.Errorf("acquire returned fence %d; the table %q was modified by hand", fence, d.table)
				}
				res[i] = driver.Result{Acquired: true, Fence: uint64(fence)}
				continue
			}
			refused = true
			if res[i].HolderTTL, err = d.holderTTL(ctx, tx, r.Key); err != nil {
				return err
			}
		}
		if refused {
			rolledBack = true
			return errRefused
		}
		return nil
	})
	switch {
	case rolledBack:
		for i := range res {
			if res[i].Acquired {
				res[i] = driver.Result{}
			}
		}
		return res, nil
	case err != nil:
		if ctx.Err() != nil {
			for _, r := range reqs {
				d.releaseAbandoned(r.Key, r.Token)
			}
		}
		return nil, err
	}
	return res, nil
}

// holderTTL is, within tx, the remaining lease of what holds key: its
// exclusive holder, or the shortest of its shared grants.
func (d *sqliteDriver) holderTTL(ctx context.Context, tx *sql.Tx, key string) (time.Duration, error) {
	var (
		held   bool
		leftMS int64
	)
	present, err := sqllease.Found(tx.QueryRowContext(ctx, d.q(sqlMainState), key).Scan(&held, &leftMS), sql.ErrNoRows)
	if err != nil {
		return 0, err
	}
	if present && held {
		return max(sqllease.FromMillis(leftMS), time.Millisecond), nil
	}
	si, err := d.shareInfo(ctx, tx, key)
	if err != nil {
		return 0, err
	}
	if si.n > 0 {
		return max(si.minTTL, time.Millisecond), nil
	}
	return time.Millisecond, nil
}
