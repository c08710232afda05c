package sqlitedlock

import (
	"context"
	"fmt"

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
// BINARY collation gives bytewise order.
func (d *sqliteDriver) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	if err := d.check(ctx); err != nil {
		return nil, err
	}
	return sqllease.List(ctx, prefix, d.listBatch)
}

// listBatch reads up to n held keys of [lo, hi).
func (d *sqliteDriver) listBatch(ctx context.Context, lo, hi string, n int) ([]driver.KeyInfo, error) {
	var out []driver.KeyInfo
	q := statement(sqlList, d.table)
	err := d.retry(ctx, "list", func() error {
		out = out[:0]
		rows, err := d.db.QueryContext(ctx, q, lo, hi, n)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				k         driver.KeyInfo
				fence, ms int64
			)
			if err := rows.Scan(&k.Key, &fence, &ms, &k.Metadata); err != nil {
				return err
			}
			k.Held, k.Fence, k.TTL, k.Waiters = true, uint64(max(fence, 0)), sqllease.FromMillis(ms), -1
			out = append(out, k)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return rows.Close()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// forceTries bounds ForceRelease's read-then-free rounds when the key keeps
// changing hands in between.
const forceTries = 5

// ForceRelease implements driver.ForceReleaser: it reads the key's holder,
// then frees exactly that holder (same token, fence and metadata, lease
// still live) with one conditional UPDATE that keeps the row and its fence,
// and wakes a waiter in this process as Release does. When the key changed
// hands in between it reads again, up to 5 times. The freed holder's next
// Refresh or RefreshBatch finds no row with its token and returns
// ErrNotHeld. Two statements; the TTL returned is the one the read saw.
func (d *sqliteDriver) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	if err := d.check(ctx); err != nil {
		return driver.Info{}, err
	}
	q := statement(sqlForceRelease, d.table)
	for range forceTries {
		st, err := d.read(ctx, key)
		if err != nil {
			return driver.Info{}, err
		}
		info := driver.Info{Fence: uint64(max(st.fence, 0)), Waiters: -1}
		if !st.held() {
			return info, nil
		}
		var n int64
		err = d.retry(ctx, "force release", func() error {
			r, err := d.db.ExecContext(ctx, q, key, st.token, st.fence, st.meta)
			if err != nil {
				return err
			}
			n, err = r.RowsAffected()
			return err
		})
		if err != nil {
			return driver.Info{}, err
		}
		if n > 0 {
			d.hub.notify(d.table, key)
			info.Held, info.TTL, info.Metadata = true, sqllease.FromMillis(st.remaining), st.meta
			return info, nil
		}
	}
	return driver.Info{}, fmt.Errorf("sqlite %s: force release of %q: the key changed hands %d times while being freed; try again", d.name, key, forceTries)
}
