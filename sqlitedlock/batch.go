package sqlitedlock

import (
	"context"
	"database/sql"
	"math/bits"
	"strings"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// batchRows bounds the locks of one refresh statement: 1536 parameters,
// well below SQLITE_MAX_VARIABLE_NUMBER (32766 since SQLite 3.32).
const batchRows = 512

// batchSizes is the number of prepared refresh statements a driver keeps:
// one for each power of two up to batchRows. A chunk of locks uses the
// smallest that fits, its unused rows bound to NULL (which matches no
// row), so that a client refreshing about the same number of locks each
// interval reuses one prepared statement instead of compiling a new one.
const batchSizes = 10 // 1, 2, 4, ..., 512

var _ driver.BatchRefresher = (*sqliteDriver)(nil)

// RefreshBatch implements driver.BatchRefresher: every lock of reqs is
// refreshed as Refresh would, with one UPDATE ... FROM ... RETURNING
// statement per 512 locks, retried like every statement while the file is
// busy. Requests with the same key and token are refreshed once, for the
// longest of their TTLs, and share the result. A statement that fails
// gives its error to every lock it carried.
func (d *sqliteDriver) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	return sqllease.RefreshBatch(ctx, reqs, sqllease.Limits{Rows: batchRows}, d.Check, d.refreshChunk)
}

type keyToken struct{ key, token string }

// refreshChunk refreshes items with one statement and sets errs (of the
// same length).
func (d *sqliteDriver) refreshChunk(ctx context.Context, items []driver.RefreshRequest, errs []error) {
	st, size, err := d.batchStmt(ctx, len(items))
	if err != nil {
		sqllease.Fill(errs, 0, len(errs), err)
		return
	}
	args := make([]any, 3*size) // padding rows stay NULL
	for i, it := range items {
		args[3*i], args[3*i+1], args[3*i+2] = it.Key, it.Token, millis(it.TTL)
	}
	var done map[keyToken]bool
	err = d.retry(ctx, "refresh", func() error {
		d.batchStatements.Add(1)
		done = make(map[keyToken]bool, len(items))
		rows, err := st.QueryContext(ctx, args...)
		return sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
			var kt keyToken
			if err := scan(&kt.key, &kt.token); err != nil {
				return err
			}
			done[kt] = true
			return nil
		})
	})
	if err != nil {
		sqllease.Fill(errs, 0, len(errs), err)
		return
	}
	for i, it := range items {
		if !done[keyToken{it.Key, it.Token}] {
			errs[i] = sqllease.NotHeld(it.Key)
		}
	}
	d.refreshShares(ctx, items, errs)
}

// refreshBatchSQL completes the statement for n locks: v gets n rows of
// placeholders.
func refreshBatchSQL(tmpl string, n int) string {
	const row = "(?, ?, ?)"
	var sb strings.Builder
	sb.Grow(n * (len(row) + 2))
	for i := range n {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(row)
	}
	return strings.Replace(tmpl, "{ROWS}", sb.String(), 1)
}

// batchStmt returns the prepared refresh statement for up to n locks and
// its number of rows.
func (d *sqliteDriver) batchStmt(ctx context.Context, n int) (*sql.Stmt, int, error) {
	i := bits.Len(uint(n - 1)) // smallest i with 1<<i >= n
	rows := 1 << i
	d.batchMu.Lock()
	defer d.batchMu.Unlock()
	if d.Closed() {
		return nil, 0, driver.ErrClosed // Close has closed the statements
	}
	if d.batchStmts[i] != nil {
		return d.batchStmts[i], rows, nil
	}
	var st *sql.Stmt
	err := d.retry(ctx, "prepare", func() error {
		var err error
		st, err = d.db.PrepareContext(ctx, refreshBatchSQL(statement(sqlRefreshBatch, d.table), rows))
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	d.batchStmts[i] = st
	return st, rows, nil
}
