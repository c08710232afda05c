package pgdlock

import (
	"context"
	"fmt"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

var (
	_ driver.Lister        = (*pgDriver)(nil)
	_ driver.ForceReleaser = (*pgDriver)(nil)
	_ driver.Lister        = pollOnly{}
	_ driver.ForceReleaser = pollOnly{}
	_ driver.ShareKeeper   = pollOnly{}
)

// List implements driver.Lister with range scans of the primary key: one
// SELECT per 100 held keys, "key" >= prefix AND "key" < the prefix's end
// (sqllease.PrefixEnd), so no character of the prefix is a pattern; bytea
// compares bytes, so the order is bytewise. Free rows and leases that ran
// out on the server's clock are left out.
func (d *pgDriver) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	return sqllease.List(ctx, prefix, d.Check, d.listBatch)
}

// listBatch reads up to n held keys of [lo, hi).
func (d *pgDriver) listBatch(ctx context.Context, lo, hi string, n int) ([]driver.KeyInfo, error) {
	var out []driver.KeyInfo
	err := d.q.query(ctx, d.st.list, []any{[]byte(lo), []byte(hi), n}, func(scan func(dest ...any) error) error {
		var (
			key       []byte
			fence, us int64
			k         driver.KeyInfo
		)
		if err := scan(&key, &fence, &us, &k.Metadata); err != nil {
			return err
		}
		k.Key, k.Held, k.Fence, k.TTL, k.Waiters = string(key), true, uint64(max(fence, 0)), sqllease.FromMicros(us), -1
		out = append(out, k)
		return nil
	})
	if err != nil {
		return nil, d.Wrap("list", err)
	}
	return out, nil
}

// ForceRelease implements driver.ForceReleaser with one transaction whose
// last statement locks the key's row while its lease is live (SELECT ...
// FOR UPDATE), frees it as Release does (keeping the row and its fence)
// and returns what it freed; with notifications on, the same statement
// notifies the waiters on commit, as Release does. The freed holder's next Refresh or
// RefreshBatch finds no row with its token and returns ErrNotHeld. A key
// with shared grants has its grants and waiting writers deleted first, in
// the same transaction, and its row (which holds the marker of its shared
// grants: the newest fence and metadata, the longest lease) freed.
func (d *pgDriver) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Info{}, err
	}
	q, args := d.st.forceRelease, []any{[]byte(key)}
	if d.lis != nil {
		q, args = d.st.forceReleaseNotify, []any{[]byte(key), d.lis.channel, payload(key)}
	}
	var (
		r  sqllease.Row
		us int64
	)
	err := inTx(ctx, d.q, func(tx runner) error {
		if err := d.forceShares(ctx, tx, []byte(key)); err != nil {
			return err
		}
		_, err := tx.queryRow(ctx, q, args, &r.Held, &r.Fence, &us, &r.Metadata)
		return err
	})
	if err != nil {
		return driver.Info{}, d.Wrap("force release", err)
	}
	r.TTL = sqllease.FromMicros(us)
	if r.Held && r.Fence <= 0 {
		return driver.Info{}, fmt.Errorf("pgdlock: force release: table %s returned fence %d", d.Table, r.Fence)
	}
	return r.Info(), nil
}

// List implements driver.Lister.
func (p pollOnly) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	return p.Locker.(*pgDriver).List(ctx, prefix)
}

// ForceRelease implements driver.ForceReleaser, without a notification.
func (p pollOnly) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	return p.Locker.(*pgDriver).ForceRelease(ctx, key)
}
