package mysqldlock

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

var _ driver.MultiLocker = (*myDriver)(nil)

// Limits of one AcquireMany: at most multiRows keys, and at most
// multiBytes of keys, tokens and metadata, so that no statement of the
// transaction outgrows the server's max_allowed_packet (see batchBytes).
// More is refused with errors.ErrUnsupported before anything is sent.
const (
	multiRows  = 1000       // keys
	multiBytes = batchBytes // key, token and metadata bytes, before escaping
)

// multiTries is how many times AcquireMany runs its transaction when it
// loses a race: a row of a missing key inserted by another transaction
// (1062), a deadlock (1213) or a lock wait timeout (1205). After that the
// call reports every key not acquired, as a refusal.
const multiTries = 3

// The AcquireMany statements, with {T}, {S}, {NOW} as in statements.go,
// {KEYS} standing for a list of placeholders, one per key, and {ROWS} for
// the rows built by manyUpdateSQL and manyInsertSQL.
const (
	// sqlManyLock reads and locks the existing rows of the keys, in key
	// order: key, token, fence, remaining µs (negative when lapsed).
	// Parameters: the keys.
	sqlManyLock = "SELECT `key`, token, fence, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at) FROM {T}\n" +
		"WHERE `key` IN ({KEYS}) ORDER BY `key` FOR UPDATE"

	// sqlManyShortest reads, per key, the shortest remaining µs of its
	// live shared grants, for the keys the marker holds. Parameters: the
	// keys.
	sqlManyShortest = "SELECT `key`, MIN(TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at)) FROM {S}\n" +
		"WHERE `key` IN ({KEYS}) AND writer = 0 AND expires_at > {NOW} GROUP BY `key`"

	// sqlManyUpdate grants the existing rows, locked by sqlManyLock: each
	// row v of {ROWS} (key, token, fence, ttl µs, metadata) gives its key
	// the token, the fence the caller judged (the same for the token's
	// live lease, the next one otherwise) and an expiry on the server's
	// clock. No assignment reads a column, so the result does not depend
	// on the order the server assigns them in.
	sqlManyUpdate = "UPDATE {T} AS l JOIN (\n\t{ROWS}\n) AS v ON l.`key` = v.k\n" +
		"SET l.token = v.t, l.fence = v.f, l.expires_at = {NOW} + INTERVAL v.us MICROSECOND, l.metadata = v.m"

	// sqlManyInsert makes the rows of the missing keys, granted with fence
	// 1. {ROWS} is one "(key, token, ttl µs, metadata)" tuple per key.
	sqlManyInsert = "INSERT INTO {T} (`key`, token, fence, expires_at, metadata) VALUES\n\t{ROWS}"
)

// manyRow is a key's row as sqlManyLock read it.
type manyRow struct {
	token []byte
	fence uint64
	left  int64 // remaining µs, <= 0 when lapsed
}

// AcquireMany implements driver.MultiLocker with one transaction for up to
// 1000 keys: sqlManyLock locks the keys' existing rows in key order (so
// that concurrent calls over overlapping keys queue instead of
// deadlocking) and the driver judges them as Acquire's statement would.
// When any key has another live holder (or the marker of shared grants)
// the transaction rolls back having written nothing, and the result
// reports the holders' remaining leases (the shortest shared lease for the
// marker). Otherwise one multi-row UPDATE takes the existing rows and one
// multi-row INSERT makes the missing ones, and the transaction commits. A
// transaction that lost a race is run again, up to 3 times in all; then
// every key is reported not acquired. Any other error leaves the outcome
// unknown, and the portable layer releases the keys (driver.MultiLocker).
func (d *myDriver) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return nil, err
	}
	if len(reqs) > multiRows {
		return nil, fmt.Errorf("mysqldlock: %d keys in one step, more than %d: %w", len(reqs), multiRows, errors.ErrUnsupported)
	}
	size := 0
	pos := make(map[string]int, len(reqs))
	for i, r := range reqs {
		if len(r.Token) > maxToken {
			return nil, fmt.Errorf("%w: mysqldlock: token longer than %d bytes", driver.ErrInvalidOption, maxToken)
		}
		if _, dup := pos[r.Key]; dup {
			return nil, fmt.Errorf("%w: mysqldlock: key %q asked for twice in one AcquireMany", driver.ErrInvalidOption, r.Key)
		}
		pos[r.Key] = i
		size += len(r.Key) + len(r.Token) + min(len(r.Metadata), maxMetadata)
	}
	if size > multiBytes {
		return nil, fmt.Errorf("mysqldlock: %d bytes of keys, tokens and metadata in one step, more than %d: %w", size, multiBytes, errors.ErrUnsupported)
	}
	if len(reqs) == 0 {
		return []driver.Result{}, nil
	}
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(reqs[a].Key, reqs[b].Key) })
	r := strings.NewReplacer("{T}", d.Table.Quote("`"), "{S}", d.Table.Shares().Quote("`"), "{NOW}", now,
		"{KEYS}", strings.Repeat("?, ", len(reqs)-1)+"?")
	for range multiTries {
		res, err := d.acquireManyTx(ctx, r, reqs, order, pos)
		switch {
		case err == nil:
			return res, nil
		case ctx.Err() != nil:
			return nil, d.Wrap("acquire", err)
		case isCode(err, 1062, 1213, 1205):
			continue // lost a race: again
		}
		return nil, d.Wrap("acquire", err)
	}
	return make([]driver.Result, len(reqs)), nil
}

// acquireManyTx is one run of AcquireMany's transaction over reqs, whose
// positions order lists in key order and pos maps from key; r completes
// the statements.
func (d *myDriver) acquireManyTx(ctx context.Context, r *strings.Replacer, reqs []driver.Request, order []int, pos map[string]int) ([]driver.Result, error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }() // after a Commit: sql.ErrTxDone, nothing sent
	keys := make([]any, len(order))
	for j, i := range order {
		keys[j] = []byte(reqs[i].Key)
	}
	rows := make(map[string]manyRow, len(reqs))
	q, err := tx.QueryContext(ctx, r.Replace(sqlManyLock), keys...)
	err = sqllease.QueryRows(q, err, func(scan func(dest ...any) error) error {
		var (
			key, token []byte
			fence      uint64
			left       sql.NullInt64
		)
		if err := scan(&key, &token, &fence, &left); err != nil {
			return err
		}
		if _, ok := pos[string(key)]; !ok {
			return fmt.Errorf("acquire read key %q, not asked for", key)
		}
		rows[string(key)] = manyRow{token: token, fence: fence, left: left.Int64}
		return nil
	})
	if err != nil {
		return nil, err
	}

	res := make([]driver.Result, len(reqs))
	var busy, marked []any
	for _, i := range order {
		req := reqs[i]
		row, found := rows[req.Key]
		switch {
		case !found:
			res[i] = driver.Result{Acquired: true, Fence: 1}
		case string(row.token) == req.Token && row.left > 0 && row.fence > 0:
			res[i] = driver.Result{Acquired: true, Fence: row.fence} // renewed
		case len(row.token) == 0 || row.left <= 0 || string(row.token) == req.Token:
			res[i] = driver.Result{Acquired: true, Fence: row.fence + 1}
		default:
			res[i] = driver.Result{HolderTTL: sqllease.FromMicros(row.left)}
			busy = append(busy, []byte(req.Key))
			if string(row.token) == marker {
				marked = append(marked, []byte(req.Key))
			}
		}
	}
	if len(busy) > 0 {
		if len(marked) > 0 {
			if err := d.shortestShares(ctx, tx, marked, pos, res); err != nil {
				return nil, err
			}
		}
		for i := range res {
			if res[i].Acquired {
				res[i] = driver.Result{}
			}
		}
		return res, nil // rolled back: nothing written
	}

	var update, insert []int
	for _, i := range order {
		if _, found := rows[reqs[i].Key]; found {
			update = append(update, i)
		} else {
			insert = append(insert, i)
		}
	}
	if len(update) > 0 {
		args := make([]any, 0, 5*len(update))
		for _, i := range update {
			args = append(args, []byte(reqs[i].Key), []byte(reqs[i].Token), res[i].Fence, sqllease.Micros(reqs[i].TTL), metadataArg(reqs[i].Metadata))
		}
		if _, err := tx.ExecContext(ctx, manyUpdateSQL(r.Replace(sqlManyUpdate), len(update)), args...); err != nil {
			return nil, err
		}
	}
	if len(insert) > 0 {
		args := make([]any, 0, 4*len(insert))
		for _, i := range insert {
			args = append(args, []byte(reqs[i].Key), []byte(reqs[i].Token), sqllease.Micros(reqs[i].TTL), metadataArg(reqs[i].Metadata))
		}
		if _, err := tx.ExecContext(ctx, manyInsertSQL(r.Replace(sqlManyInsert), len(insert)), args...); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return res, nil
}

// shortestShares sets, in tx, the HolderTTL of the results of the keys
// the marker holds to the shortest of each key's live shared grants,
// where there is one (else the marker's lease stays).
func (d *myDriver) shortestShares(ctx context.Context, tx *sql.Tx, keys []any, pos map[string]int, res []driver.Result) error {
	q := strings.Replace(strings.NewReplacer("{S}", d.Table.Shares().Quote("`"), "{NOW}", now).Replace(sqlManyShortest),
		"{KEYS}", strings.Repeat("?, ", len(keys)-1)+"?", 1)
	rows, err := tx.QueryContext(ctx, q, keys...)
	return sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
		var (
			key  []byte
			left sql.NullInt64
		)
		if err := scan(&key, &left); err != nil {
			return err
		}
		if i, ok := pos[string(key)]; ok && left.Valid && left.Int64 > 0 {
			res[i].HolderTTL = sqllease.FromMicros(left.Int64)
		}
		return nil
	})
}

// metadataArg is metadata as the column takes it: at most maxMetadata
// bytes, and never nil (which the driver would send as NULL).
func metadataArg(metadata string) []byte {
	m := []byte(metadata)
	if len(m) > maxMetadata {
		m = m[:maxMetadata]
	}
	if m == nil {
		m = []byte{}
	}
	return m
}

// manyUpdateSQL completes sqlManyUpdate for n rows: the derived table gets
// n rows of placeholders (key, token, fence, ttl µs, metadata).
func manyUpdateSQL(tmpl string, n int) string {
	return withRows(tmpl, n,
		"SELECT CAST(? AS BINARY) AS k, CAST(? AS BINARY) AS t, CAST(? AS UNSIGNED) AS f, CAST(? AS SIGNED) AS us, CAST(? AS BINARY) AS m",
		"\n\tUNION ALL SELECT CAST(? AS BINARY), CAST(? AS BINARY), CAST(? AS UNSIGNED), CAST(? AS SIGNED), CAST(? AS BINARY)")
}

// manyInsertSQL completes sqlManyInsert for n rows of placeholders (key,
// token, ttl µs, metadata).
func manyInsertSQL(tmpl string, n int) string {
	const row = "(?, ?, 1, " + now + " + INTERVAL ? MICROSECOND, ?)"
	var sb strings.Builder
	sb.Grow(n * (len(row) + 3))
	for i := range n {
		if i > 0 {
			sb.WriteString(",\n\t")
		}
		sb.WriteString(row)
	}
	return strings.Replace(tmpl, "{ROWS}", sb.String(), 1)
}
