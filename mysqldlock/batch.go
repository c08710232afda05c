package mysqldlock

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"slices"
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
	b := sqllease.NewBatch(reqs)
	errs := make([]error, len(b.Items))
	if err := d.check(ctx); err != nil {
		sqllease.Fill(errs, 0, len(errs), err)
		return b.Spread(errs)
	}
	// Rows are locked in key order, so that two clients' batches over the
	// same keys cannot deadlock on each other.
	order := make([]int, len(b.Items))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		return cmp.Or(strings.Compare(b.Items[i].Key, b.Items[j].Key), strings.Compare(b.Items[i].Token, b.Items[j].Token))
	})
	items := make([]driver.RefreshRequest, len(order))
	for i, j := range order {
		items[i] = b.Items[j]
	}
	sorted := make([]error, len(items))
	chunks := sqllease.Chunks(len(items), batchRows, batchBytes, func(i int) int {
		return len(items[i].Key) + len(items[i].Token)
	})
	for _, c := range chunks {
		if err := d.check(ctx); err != nil {
			sqllease.Fill(sorted, c[0], c[1], err)
			continue
		}
		d.refreshChunk(ctx, items[c[0]:c[1]], sorted[c[0]:c[1]])
	}
	for i, j := range order {
		errs[j] = sorted[i]
	}
	return b.Spread(errs)
}

// refreshChunk refreshes items, sorted by key, and sets errs (of the same
// length).
func (d *myDriver) refreshChunk(ctx context.Context, items []driver.RefreshRequest, errs []error) {
	d.batchStatements.Add(1)
	res, err := d.db.ExecContext(ctx, refreshBatchSQL(d.st.refreshBatch, len(items)), refreshBatchArgs(items)...)
	if err != nil {
		sqllease.Fill(errs, 0, len(errs), d.wrap("refresh", err))
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
		sqllease.Fill(errs, 0, len(errs), d.wrap("refresh", err))
		return
	}
	for i, it := range items {
		if st, ok := held[it.Key]; !ok || st.left <= 0 || !bytes.Equal(st.token, []byte(it.Token)) {
			errs[i] = sqllease.NotHeld(it.Key)
		}
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
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]holder, len(args))
	for rows.Next() {
		var (
			key, token []byte
			us         sql.NullInt64
		)
		if err := rows.Scan(&key, &token, &us); err != nil {
			return nil, err
		}
		out[string(key)] = holder{token: token, left: sqllease.FromMicros(us.Int64)}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, rows.Close()
}

// refreshBatchSQL completes the statement for n locks: the derived table
// of sqlRefreshBatch gets n rows of placeholders.
func refreshBatchSQL(tmpl string, n int) string {
	const first = "SELECT CAST(? AS BINARY) AS k, CAST(? AS BINARY) AS t, CAST(? AS SIGNED) AS us"
	const more = "\n\tUNION ALL SELECT CAST(? AS BINARY), CAST(? AS BINARY), CAST(? AS SIGNED)"
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
