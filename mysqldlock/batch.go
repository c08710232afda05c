package mysqldlock

import (
	"bytes"
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// Limits of one refresh statement: 1500 placeholders, far below the
// server's 65535, and at most about 2 MiB of statement text with
// placeholders filled in, far below the smallest default
// max_allowed_packet (4 MiB on MySQL 5.7, 16 MiB on MariaDB, 64 MiB on
// MySQL 8).
const (
	batchRows  = 500
	batchBytes = 1 << 20 // key and token bytes, before escaping
)

var _ driver.BatchRefresher = (*myDriver)(nil)

// RefreshBatch implements driver.BatchRefresher: every lock of reqs is
// refreshed as Refresh would, with one multi-table UPDATE per 500 locks.
// When the UPDATE changed as many rows as it carried distinct locks (the
// normal case) each was refreshed; otherwise one SELECT of the same keys
// tells which were, as Refresh does for a single lock. Requests with the
// same key and token are refreshed once, for the longest of their TTLs, and
// share the result. A statement that fails gives its error to every lock it
// carried.
func (d *myDriver) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	// Rows are locked in key order, so that two clients' batches over the
	// same keys cannot deadlock on each other.
	return sqllease.RefreshBatch(ctx, reqs, sqllease.Limits{Rows: batchRows, Bytes: batchBytes, Sorted: true}, d.Check, d.refreshChunk)
}

// refreshChunk refreshes items, sorted by key, and sets errs (of the same
// length).
func (d *myDriver) refreshChunk(ctx context.Context, items []driver.RefreshRequest, errs []error) {
	d.batchStatements.Add(1)
	res, err := d.db.ExecContext(ctx, refreshBatchSQL(d.st.refreshBatch, len(items)), refreshBatchArgs(items)...)
	if err != nil {
		sqllease.Fill(errs, 0, len(errs), d.Wrap("refresh", err))
		return
	}
	dupKeys := false
	for i := 1; i < len(items); i++ {
		dupKeys = dupKeys || items[i].Key == items[i-1].Key
	}
	if n, err := res.RowsAffected(); err == nil && n == int64(len(items)) && !dupKeys {
		return // every lock matched: all refreshed
	}
	// Some row did not change: not ours, or (in the same microsecond) the
	// same expiry written again, which MySQL does not count as a change; or
	// a key asked for with several tokens. Read the rows to tell.
	d.batchStatements.Add(1)
	held, err := d.states(ctx, items)
	if err != nil {
		sqllease.Fill(errs, 0, len(errs), d.Wrap("refresh", err))
		return
	}
	shared := false
	for i, it := range items {
		if st, ok := held[it.Key]; !ok || st.left <= 0 || !bytes.Equal(st.token, []byte(it.Token)) {
			errs[i] = sqllease.NotHeld(it.Key)
			shared = shared || (ok && st.left > 0 && string(st.token) == marker)
		}
	}
	if shared {
		d.refreshShares(ctx, items, errs)
	}
}

// holder is a key's holder and remaining lease, as states reads them.
type holder struct {
	token []byte
	left  time.Duration
}

// states reads the holder of each key of items with one SELECT.
func (d *myDriver) states(ctx context.Context, items []driver.RefreshRequest) (map[string]holder, error) {
	args := make([]any, 0, len(items))
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		if !seen[it.Key] {
			seen[it.Key] = true
			args = append(args, []byte(it.Key))
		}
	}
	q := d.st.states + "(" + strings.Repeat("?, ", len(args)-1) + "?)"
	out := make(map[string]holder, len(args))
	rows, err := d.db.QueryContext(ctx, q, args...)
	err = sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
		var (
			key, token []byte
			us         sql.NullInt64
		)
		if err := scan(&key, &token, &us); err != nil {
			return err
		}
		out[string(key)] = holder{token: token, left: sqllease.FromMicros(us.Int64)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// refreshBatchSQL completes the statement for n locks: the derived table
// of sqlRefreshBatch gets n rows of placeholders.
func refreshBatchSQL(tmpl string, n int) string {
	return withRows(tmpl, n,
		"SELECT CAST(? AS BINARY) AS k, CAST(? AS BINARY) AS t, CAST(? AS SIGNED) AS us",
		"\n\tUNION ALL SELECT CAST(? AS BINARY), CAST(? AS BINARY), CAST(? AS SIGNED)")
}

// withRows replaces {ROWS} in tmpl with a derived table of n rows of
// placeholders: the first row (which names the columns), then n-1 of more.
func withRows(tmpl string, n int, first, more string) string {
	var sb strings.Builder
	sb.Grow(len(first) + (n-1)*len(more))
	sb.WriteString(first)
	for range n - 1 {
		sb.WriteString(more)
	}
	return strings.Replace(tmpl, "{ROWS}", sb.String(), 1)
}

// refreshBatchArgs lists key, token and TTL in µs of each item, in the
// order of refreshBatchSQL's placeholders.
func refreshBatchArgs(items []driver.RefreshRequest) []any {
	args := make([]any, 0, 3*len(items))
	for _, it := range items {
		args = append(args, []byte(it.Key), []byte(it.Token), sqllease.Micros(it.TTL))
	}
	return args
}
