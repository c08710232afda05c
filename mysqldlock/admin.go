package mysqldlock

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

var (
	_ driver.Lister        = (*myDriver)(nil)
	_ driver.ForceReleaser = (*myDriver)(nil)
)

// List implements driver.Lister with range scans of the primary key: one
// SELECT per 100 held keys, `key` >= prefix AND `key` < the prefix's end
// (sqllease.PrefixEnd), so no character of the prefix is a LIKE pattern.
// The key column is VARBINARY, which compares bytes without case folding
// or space padding, so the order is bytewise (a table made by hand with a
// text key column is refused when its order is not). Free rows and leases
// that ran out on the server's clock are left out.
func (d *myDriver) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	return sqllease.List(ctx, prefix, d.Check, d.listBatch)
}

// listBatch reads up to n held keys of [lo, hi).
func (d *myDriver) listBatch(ctx context.Context, lo, hi string, n int) ([]driver.KeyInfo, error) {
	var out []driver.KeyInfo
	rows, err := d.db.QueryContext(ctx, d.st.list, []byte(lo), []byte(hi), n)
	err = sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
		var (
			key, meta []byte
			fence     uint64
			us        sql.NullInt64
		)
		if err := scan(&key, &fence, &us, &meta); err != nil {
			return err
		}
		out = append(out, driver.KeyInfo{Key: string(key), Info: driver.Info{
			Held: true, Fence: fence, TTL: sqllease.FromMicros(us.Int64), Metadata: string(meta), Waiters: -1,
		}})
		return nil
	})
	if err != nil {
		return nil, d.Wrap("list", err)
	}
	return out, nil
}

// ForceRelease implements driver.ForceReleaser: it reads the key's holder,
// then frees exactly that holder (same token, fence and metadata, lease
// still live on the server's clock) with one conditional UPDATE that keeps
// the row and its fence — an atomic compare-and-free that works alike on
// MySQL 8 (which has no DELETE/UPDATE ... RETURNING) and MariaDB, with no
// transaction and no gap lock. When the key changed hands in between it
// reads again, up to 5 times. It wakes this driver's waiters for the key, as
// Release does. The freed holder's next Refresh or RefreshBatch finds its
// token gone and returns ErrNotHeld. First, one transaction locks the
// key's row and deletes its shared grants and waiting writers; when the row
// held the marker of live shared grants it is freed there and what it said
// (the newest fence and metadata, the longest lease) is returned.
func (d *myDriver) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Info{}, err
	}
	k := []byte(key)
	if in, err := d.forceShares(ctx, k); err != nil || in.Held {
		if in.Held {
			d.hub.Notify(key)
		}
		return in, err
	}
	read := func() (sqllease.Row, error) {
		r, err := d.state(ctx, k)
		if err != nil {
			return sqllease.Row{}, d.Wrap("force release", err)
		}
		return r, nil
	}
	free := func(r sqllease.Row) (bool, error) {
		meta := []byte(r.Metadata)
		if meta == nil {
			meta = []byte{} // empty, not NULL, which would match no row
		}
		res, err := d.db.ExecContext(ctx, d.st.forceRelease, k, []byte(r.Token), r.Fence, meta)
		if err != nil {
			return false, d.Wrap("force release", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return false, d.Wrap("force release", err)
		}
		if n > 0 {
			d.hub.Notify(key)
		}
		return n > 0, nil
	}
	return sqllease.ForceRelease(fmt.Sprintf("mysqldlock (table %s)", d.Table), key, read, free)
}
