package pgdlock

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// Limits of one refresh statement. The statement has three parameters
// whatever its size; the bounds keep each statement and its reply small.
const (
	batchRows  = 1000
	batchBytes = 4 << 20 // key and token bytes, before hex encoding
)

var (
	_ driver.BatchRefresher = (*pgDriver)(nil)
	_ driver.BatchRefresher = pollOnly{}
)

// RefreshBatch implements driver.BatchRefresher: every lock of reqs is
// refreshed as Refresh would, in one UPDATE statement per 1000 locks.
// Requests with the same key and token are refreshed once, for the longest
// of their TTLs, and share the result. A statement that fails gives its
// error to every lock it carried.
func (d *pgDriver) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	return sqllease.RefreshBatch(ctx, reqs, sqllease.Limits{Rows: batchRows, Bytes: batchBytes}, d.Check, d.refreshChunk)
}

// refreshChunk refreshes items with one statement and sets errs (of the
// same length).
func (d *pgDriver) refreshChunk(ctx context.Context, items []driver.RefreshRequest, errs []error) {
	keys, tokens, ttls := batchLists(items)
	done := make([]bool, len(items))
	d.batchStatements.Add(1)
	err := d.q.query(ctx, d.st.refreshBatch, []any{keys, tokens, ttls}, func(scan func(...any) error) error {
		var i int64
		if err := scan(&i); err != nil {
			return err
		}
		if i < 1 || i > int64(len(items)) {
			return fmt.Errorf("refresh returned position %d of %d", i, len(items))
		}
		done[i-1] = true
		return nil
	})
	if err != nil {
		sqllease.Fill(errs, 0, len(errs), d.Wrap("refresh", err))
		return
	}
	for i, ok := range done {
		if !ok {
			errs[i] = sqllease.NotHeld(items[i].Key)
		}
	}
	d.refreshShares(ctx, items, errs)
}

// batchLists encodes the keys, tokens and TTLs of items as the three
// comma-separated lists sqlRefreshBatch takes (hexList, and the TTLs in
// µs).
func batchLists(items []driver.RefreshRequest) (keys, tokens, ttls string) {
	var ub strings.Builder
	for i, it := range items {
		if i > 0 {
			ub.WriteByte(',')
		}
		ub.WriteString(strconv.FormatInt(sqllease.Micros(it.TTL), 10))
	}
	return hexList(len(items), func(i int) string { return items[i].Key }),
		hexList(len(items), func(i int) string { return items[i].Token }), ub.String()
}

// hexList encodes n strings, s(0) to s(n-1), as one comma-separated list:
// each element "x" and the bytes in hex, so that no element is empty and
// none holds a comma.
func hexList(n int, s func(i int) string) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('x')
		b.WriteString(hex.EncodeToString([]byte(s(i))))
	}
	return b.String()
}

// RefreshBatch implements driver.BatchRefresher for a driver whose
// notifications are off.
func (p pollOnly) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	return p.Locker.(*pgDriver).RefreshBatch(ctx, reqs)
}
