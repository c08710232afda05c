package mysqldlock

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

var _ driver.ShareKeeper = (*myDriver)(nil)

// marker is the token the key's row holds while the key has live shared
// grants (markerSQL).
const marker = "\xffdlock:shared"

// inTx runs fn in a transaction and commits it; an error of fn rolls it
// back. A transaction that lost a deadlock (1213) or waited too long for a
// lock (1205) is run again, up to 3 times.
func (d *myDriver) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var err error
	for range 3 {
		var tx *sql.Tx
		tx, err = d.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err = fn(tx); err == nil {
			if err = tx.Commit(); err == nil {
				return nil
			}
		} else {
			_ = tx.Rollback()
		}
		if !isCode(err, 1213, 1205) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// execAgain runs one statement on its own, again when it lost a deadlock
// (1213) or waited too long for a lock (1205), up to 3 times. A statement
// on the shared rows waits for the shared locks of a shared acquire's
// reads; InnoDB picks it as the victim when that acquire then needs the
// same row exclusively (renewing its grant).
func (d *myDriver) execAgain(ctx context.Context, query string, args ...any) (sql.Result, error) {
	var (
		res sql.Result
		err error
	)
	for range 3 {
		res, err = d.db.ExecContext(ctx, query, args...)
		if err == nil || !isCode(err, 1213, 1205) || ctx.Err() != nil {
			break
		}
	}
	return res, err
}

// lockState reads and locks the key's row in tx (the zero Row when there
// is none).
func (d *myDriver) lockState(ctx context.Context, tx *sql.Tx, key []byte) (sqllease.Row, error) {
	var (
		token, meta []byte
		fence       uint64
		us          sql.NullInt64
	)
	found, err := sqllease.Found(tx.QueryRowContext(ctx, d.st.lockState, key).Scan(&token, &fence, &us, &meta), sql.ErrNoRows)
	if !found {
		return sqllease.Row{}, err
	}
	left := sqllease.FromMicros(us.Int64)
	return sqllease.Row{Held: len(token) > 0 && left > 0, Token: string(token), Fence: int64(fence), TTL: left, Metadata: string(meta)}, nil
}

// errRefused ends a shared acquire's transaction whose verdict was a
// refusal.
var errRefused = errors.New("mysqldlock: shared grant refused")

// AcquireShared implements driver.SharedLocker with a transaction of two
// statements: sqlShareGrant judges and locks the key's row and takes the
// fence, then sqlShareRecord records the grant. When the first reports
// lapsed shared rows, one more statement deletes them after the commit. A
// refusal rolls the transaction back and reads why with one SELECT.
func (d *myDriver) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Result{}, err
	}
	if len(req.Token) > maxToken {
		return driver.Result{}, fmt.Errorf("%w: mysqldlock: token longer than %d bytes", driver.ErrInvalidOption, maxToken)
	}
	key, tok, us := []byte(req.Key), []byte(req.Token), sqllease.Micros(req.TTL)
	meta := []byte(req.Metadata)
	if len(meta) > maxMetadata {
		meta = meta[:maxMetadata]
	}
	grant := d.st.shareGrant.args(map[string]any{"key": key, "tok": tok, "us": us, "meta": meta, "lim": req.Limit})
	var (
		fence  int64
		lapsed bool
	)
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		fence, lapsed = 0, false
		x, err := tx.ExecContext(ctx, d.st.shareGrant.text, grant...)
		if err != nil {
			return err
		}
		id, err := x.LastInsertId()
		if err != nil {
			return err
		}
		if id <= 0 {
			return errRefused
		}
		fence, lapsed = id&^lapsedFlag, id&lapsedFlag != 0
		_, err = tx.ExecContext(ctx, d.st.shareRecord, key, tok, fence, us, meta, req.Limit, fence, us, meta, req.Limit)
		return err
	})
	if err == nil && lapsed {
		// After the commit, on its own: in the transaction it would
		// upgrade the shared locks of sqlShareGrant's reads, and deadlock
		// with a release waiting for one. Best effort: the next grant
		// finds what is left.
		_, _ = d.db.ExecContext(ctx, d.st.dropLapsed, key)
	}
	switch {
	case errors.Is(err, errRefused):
		return d.shareRefusal(ctx, req)
	case err != nil && isCode(err, 1213, 1205):
		return driver.Result{HolderTTL: time.Millisecond}, nil
	case err != nil:
		return driver.Result{}, d.Wrap("acquire shared", err)
	}
	return driver.Result{Acquired: true, Fence: uint64(fence)}, nil
}

// shareRefusal reads why a shared acquire was refused: a live exclusive
// holder (its lease), live grants of another limit (ErrLimitMismatch), or
// a full key (the shortest live grant's lease, else the shortest waiting
// writer's). A key that changed since the refusal reports a 1 ms lease, to
// be tried again soon.
func (d *myDriver) shareRefusal(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	k := []byte(req.Key)
	var (
		token                      []byte
		left, grant, writer, limit sql.NullInt64
	)
	found, err := sqllease.Found(d.db.QueryRowContext(ctx, d.st.shareRefusal, k, k, k, req.Limit, k).Scan(&token, &left, &grant, &writer, &limit), sql.ErrNoRows)
	switch {
	case err != nil:
		return driver.Result{}, d.Wrap("acquire shared", err)
	case !found:
		return driver.Result{HolderTTL: time.Millisecond}, nil
	case len(token) > 0 && string(token) != marker && left.Int64 > 0:
		return driver.Result{HolderTTL: sqllease.FromMicros(left.Int64)}, nil
	case limit.Valid:
		return driver.Result{}, fmt.Errorf("%w: mysqldlock: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, req.Key, limit.Int64, req.Limit)
	case grant.Valid && grant.Int64 > 0:
		return driver.Result{HolderTTL: sqllease.FromMicros(grant.Int64)}, nil
	case writer.Valid && writer.Int64 > 0:
		return driver.Result{HolderTTL: sqllease.FromMicros(writer.Int64)}, nil
	}
	return driver.Result{HolderTTL: time.Millisecond}, nil
}

// acquireWaiting is Acquire for an attempt with Hints.Wait, in one
// transaction: the exclusive statement; when granted, the token's writer
// record goes; when refused because of the marker of shared grants, the
// token is recorded as a waiting writer for the request's TTL.
func (d *myDriver) acquireWaiting(ctx context.Context, req driver.Request, key, tok []byte, us int64, meta []byte) (driver.Result, error) {
	var res driver.Result
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		res = driver.Result{}
		x, err := tx.ExecContext(ctx, d.st.acquire, key, tok, us, meta, tok, tok, meta, tok, tok, tok, us)
		if err != nil {
			return err
		}
		var fence uint64
		if id, err := x.LastInsertId(); err == nil && id > 0 {
			fence = uint64(id)
		} else {
			r, err := d.lockState(ctx, tx, key)
			if err != nil {
				return err
			}
			switch {
			case r.Held && r.Token == req.Token && r.Fence > 0:
				fence = uint64(r.Fence)
			case r.Held && r.Token == marker:
				if _, err := tx.ExecContext(ctx, d.st.writerRecord, key, tok, us, us); err != nil {
					return err
				}
				var left sql.NullInt64
				if err := tx.QueryRowContext(ctx, d.st.shortest, key).Scan(&left); err != nil {
					return err
				}
				res = driver.Result{HolderTTL: r.TTL, WriterWaiting: true}
				if left.Valid && left.Int64 > 0 {
					res.HolderTTL = sqllease.FromMicros(left.Int64)
				}
				return nil
			case r.Token != "":
				res.HolderTTL = r.TTL
				return nil
			default:
				return nil
			}
		}
		if _, err := tx.ExecContext(ctx, d.st.writerDelete, key, tok); err != nil {
			return err
		}
		res = driver.Result{Acquired: true, Fence: fence}
		return nil
	})
	if err != nil {
		if isCode(err, 1213, 1205) {
			return driver.Result{}, nil
		}
		return driver.Result{}, d.Wrap("acquire", err)
	}
	switch {
	case res.WriterWaiting:
		d.writers.Add(req.Key, req.Token)
	case res.Acquired:
		d.writers.Remove(req.Key, req.Token)
	}
	return res, nil
}

// shortestShare is the shortest remaining lease of key's live shared
// grants, or def when it cannot be read.
func (d *myDriver) shortestShare(ctx context.Context, key []byte, def time.Duration) time.Duration {
	var left sql.NullInt64
	if err := d.db.QueryRowContext(ctx, d.st.shortest, key).Scan(&left); err != nil || !left.Valid || left.Int64 <= 0 {
		return def
	}
	return sqllease.FromMicros(left.Int64)
}

// RefreshShared implements driver.ShareKeeper: refreshShare's transaction,
// without Refresh's UPDATE and read of the key's row before it.
func (d *myDriver) RefreshShared(ctx context.Context, key, token string, ttl time.Duration) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	return d.refreshShare(ctx, key, token, ttl)
}

// ReleaseShared implements driver.ShareKeeper: releaseShare's two
// statements, without Release's UPDATE before them.
func (d *myDriver) ReleaseShared(ctx context.Context, key, token string) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	return d.releaseShare(ctx, key, token)
}

// refreshShare extends token's live shared grant of key, and the marker,
// in one transaction that locks the key's row first.
func (d *myDriver) refreshShare(ctx context.Context, key, token string, ttl time.Duration) error {
	k, tok, us := []byte(key), []byte(token), sqllease.Micros(ttl)
	held := false
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		held = false
		if _, err := d.lockState(ctx, tx, k); err != nil {
			return err
		}
		var (
			fence uint64
			meta  []byte
		)
		found, err := sqllease.Found(tx.QueryRowContext(ctx, d.st.shareLive, k, tok).Scan(&fence, &meta), sql.ErrNoRows)
		if err != nil || !found {
			return err
		}
		if _, err := tx.ExecContext(ctx, d.st.shareRefresh, us, k, tok); err != nil {
			return err
		}
		if meta == nil {
			meta = []byte{}
		}
		if _, err := tx.ExecContext(ctx, d.st.markerExtend, us, fence, meta, k); err != nil {
			return err
		}
		held = true
		return nil
	})
	if err != nil {
		return d.Wrap("refresh", err)
	}
	if !held {
		return sqllease.NotHeld(key)
	}
	return nil
}

// releaseShare deletes token's live shared grant of key with one DELETE,
// and then makes the key's row follow the grants left with one UPDATE
// (sqlShareSync), which locks the row before it reads them. Between the
// two the marker covers the released grant still: other grants may be
// given, an exclusive holder not yet. Without a live grant it deletes the
// token's other rows (its writer record, a lapsed grant) instead. Waiters
// of this driver are woken when anything went.
func (d *myDriver) releaseShare(ctx context.Context, key, token string) error {
	k, tok := []byte(key), []byte(token)
	res, err := d.execAgain(ctx, d.st.shareDrop, k, tok)
	if err != nil {
		return d.Wrap("release", err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		defer d.hub.Notify(key)
		if _, err := d.execAgain(ctx, d.st.shareSync, k, k, k, k); err != nil {
			return d.Wrap("release", err)
		}
		return nil
	}
	res, err = d.execAgain(ctx, d.st.tokenDelete, k, tok)
	if err != nil {
		return d.Wrap("release", err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		d.hub.Notify(key)
	}
	return sqllease.NotHeld(key)
}

// Holders implements driver.SharedLocker with one statement.
func (d *myDriver) Holders(ctx context.Context, key string) (driver.Holders, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Holders{}, err
	}
	var (
		h      driver.Holders
		newest uint64
	)
	k := []byte(key)
	rows, err := d.db.QueryContext(ctx, d.st.holders, k, k)
	err = sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
		var (
			kind, limit int
			fence       uint64
			left        sql.NullInt64
			meta        []byte
		)
		if err := scan(&kind, &fence, &left, &meta, &limit); err != nil {
			return err
		}
		switch kind {
		case 2:
			h.WritersWaiting++
			return nil
		case 1:
			if fence > newest {
				newest, h.Limit = fence, limit
			}
		}
		h.Holders = append(h.Holders, driver.Holder{Shared: kind == 1, Fence: fence, TTL: sqllease.FromMicros(left.Int64), Metadata: string(meta)})
		return nil
	})
	if err != nil {
		return driver.Holders{}, d.Wrap("holders", err)
	}
	slices.SortFunc(h.Holders, func(a, b driver.Holder) int { return cmp.Compare(a.Fence, b.Fence) })
	return h, nil
}

// refreshShares refreshes the shared grants among items whose exclusive
// refresh found nothing (errs[i] matching ErrNotHeld), and clears their
// errors: one transaction for all of them that locks their keys' rows in
// key order (so that batches cannot deadlock on each other), reads which
// grants are live, extends them with one multi-table UPDATE and the
// markers with another.
func (d *myDriver) refreshShares(ctx context.Context, items []driver.RefreshRequest, errs []error) {
	var (
		left []driver.RefreshRequest
		idx  []int
	)
	for i, err := range errs {
		if errors.Is(err, driver.ErrNotHeld) {
			left, idx = append(left, items[i]), append(idx, i)
		}
	}
	if len(left) == 0 {
		return
	}
	keys := make([]any, 0, len(left))
	pairs := make([]any, 0, 2*len(left))
	seen := map[string]bool{}
	for _, it := range left { // sorted by key: RefreshBatch's Limits.Sorted
		if !seen[it.Key] {
			seen[it.Key] = true
			keys = append(keys, []byte(it.Key))
		}
		pairs = append(pairs, []byte(it.Key), []byte(it.Token))
	}
	in := "(" + strings.Repeat("?, ", len(keys)-1) + "?)"
	pairIn := "(" + strings.Repeat("(?, ?), ", len(left)-1) + "(?, ?))"
	type kt struct{ key, token string }
	live := map[kt]bool{}
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		clear(live)
		rows, err := tx.QueryContext(ctx, d.st.lockKeys+in+" ORDER BY `key` FOR UPDATE", keys...)
		if err := sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error { var k []byte; return scan(&k) }); err != nil {
			return err
		}
		rows, err = tx.QueryContext(ctx, d.st.liveShares+pairIn+" FOR UPDATE", pairs...)
		err = sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
			var k, t []byte
			if err := scan(&k, &t); err != nil {
				return err
			}
			live[kt{string(k), string(t)}] = true
			return nil
		})
		if err != nil || len(live) == 0 {
			return err
		}
		if _, err := tx.ExecContext(ctx, refreshBatchSQL(d.st.shareRefreshBatch, len(left)), refreshBatchArgs(left)...); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, strings.Replace(d.st.markerFollow, "{PAIRS}", pairIn, 1), pairs...)
		return err
	})
	for j, i := range idx {
		switch {
		case err != nil:
			errs[i] = d.Wrap("refresh", err)
		case live[kt{left[j].Key, left[j].Token}]:
			errs[i] = nil
		}
	}
}

// forceShares frees key's shared grants in one transaction: it locks the
// key's row, deletes every shared row and writer record, and frees the row
// when it held the marker, returning what the marker said (Held false when
// the key had no live shared grant).
func (d *myDriver) forceShares(ctx context.Context, key []byte) (driver.Info, error) {
	var in driver.Info
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		in = driver.Info{}
		r, err := d.lockState(ctx, tx, key)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, d.st.shareForce, key); err != nil {
			return err
		}
		if r.Held && r.Token == marker {
			if _, err := tx.ExecContext(ctx, d.st.freeMarker, key); err != nil {
				return err
			}
			in = r.Info()
		}
		return nil
	})
	if err != nil {
		return driver.Info{}, d.Wrap("force release", err)
	}
	return in, nil
}
