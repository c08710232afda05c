package sqlitedlock

import (
	"context"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

var (
	_ driver.Lister        = (*sqliteDriver)(nil)
	_ driver.ForceReleaser = (*sqliteDriver)(nil)
)

// List implements driver.Lister with range scans of the primary key: one
// SELECT per 100 held keys, key >= prefix AND key < the prefix's end
// (sqllease.PrefixEnd), so no character of the prefix is a pattern. Free
// and expired rows (by the engine's clock) are left out; the key column's
// BINARY collation gives bytewise order. Keys with live shared grants come
// from the companion table in the same statement, each with its newest
// grant's fence and metadata and the longest lease.
func (d *sqliteDriver) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	return sqllease.List(ctx, prefix, d.Check, d.listBatch)
}

// listBatch reads up to n held keys of [lo, hi).
func (d *sqliteDriver) listBatch(ctx context.Context, lo, hi string, n int) ([]driver.KeyInfo, error) {
	var out []driver.KeyInfo
	q := statement(sqlList, d.table)
	err := d.retry(ctx, "list", func() error {
		out = out[:0]
		rows, err := d.db.QueryContext(ctx, q, lo, hi, n)
		return sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
			var (
				k         driver.KeyInfo
				fence, ms int64
			)
			if err := scan(&k.Key, &fence, &ms, &k.Metadata); err != nil {
				return err
			}
			k.Held, k.Fence, k.TTL, k.Waiters = true, uint64(max(fence, 0)), sqllease.FromMillis(ms), -1
			out = append(out, k)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ForceRelease implements driver.ForceReleaser: it reads the key's holder,
// then frees exactly that holder (same token, fence and metadata, lease
// still live) with one conditional UPDATE that keeps the row and its fence,
// and wakes a waiter in this process as Release does. When the key changed
// hands in between it reads again, up to 5 times. The freed holder's next
// Refresh or RefreshBatch finds no row with its token and returns
// ErrNotHeld. Two statements; the TTL returned is the one the read saw.
// First, one DELETE ... RETURNING frees every shared grant and waiting
// writer of the key; when a live grant was among them, what the grants
// were is returned (as Inspect reports it) and the exclusive path is not
// taken.
func (d *sqliteDriver) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Info{}, err
	}
	q := statement(sqlForceRelease, d.table)
	read := func() (sqllease.Row, error) { return d.read(ctx, key) }
	free := func(r sqllease.Row) (bool, error) {
		var n int64
		err := d.retry(ctx, "force release", func() error {
			res, err := d.db.ExecContext(ctx, q, key, r.Token, r.Fence, r.Metadata)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return false, err
		}
		if n > 0 {
			d.hub.notify(d.table, key)
		}
		return n > 0, nil
	}
	if in, err := d.forceShares(ctx, key); err != nil || in.Held {
		if in.Held {
			d.hub.notify(d.table, key)
		}
		return in, err
	}
	return sqllease.ForceRelease("sqlite "+d.name, key, read, free)
}
