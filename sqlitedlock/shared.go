package sqlitedlock

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

var _ driver.ShareKeeper = (*sqliteDriver)(nil)

// inTx runs f in a transaction and commits it, the whole retried while the
// file is busy. f must use tx only: a driver that opened its file has one
// connection, which the transaction holds.
func (d *sqliteDriver) inTx(ctx context.Context, op string, f func(tx *sql.Tx) error) error {
	return d.retry(ctx, op, func() error {
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := f(tx); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	})
}

// q is the statement tmpl for d's tables.
func (d *sqliteDriver) q(tmpl string) string { return statement(tmpl, d.table) }

// shareRow is one row of the companion table as sqlShareRows reads it.
type shareRow struct {
	writer bool
	token  string
	fence  int64
	ms     int64 // remaining lease; zero or less once lapsed
	limit  int
}

// shareState is the key's live shared grants and writer records.
type shareState struct {
	grants, writers int
	limit           int
	own             int64 // the token's live grant's fence, 0 for none
	soonestGrant    time.Duration
	soonestWriter   time.Duration
}

func soonest(cur, d time.Duration) time.Duration {
	if cur == 0 || d < cur {
		return d
	}
	return cur
}

// readShares reads the key's shared state in tx, for token.
func (d *sqliteDriver) readShares(ctx context.Context, tx *sql.Tx, key, token string) (shareState, error) {
	var st shareState
	rows, err := tx.QueryContext(ctx, d.q(sqlShareRows), key)
	err = sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
		var r shareRow
		if err := scan(&r.writer, &r.token, &r.fence, &r.ms, &r.limit); err != nil {
			return err
		}
		if r.ms <= 0 {
			return nil
		}
		ttl := sqllease.FromMillis(r.ms)
		if r.writer {
			st.writers++
			st.soonestWriter = soonest(st.soonestWriter, ttl)
			return nil
		}
		st.grants++
		st.limit = r.limit
		st.soonestGrant = soonest(st.soonestGrant, ttl)
		if r.token == token {
			st.own = r.fence
		}
		return nil
	})
	return st, err
}

// AcquireShared implements driver.SharedLocker with one transaction: it
// drops the key's lapsed shared rows, checks the exclusive holder, the
// limit and the waiting writers, and takes the grant's fence from the
// key's counter in the lock table.
func (d *sqliteDriver) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Result{}, err
	}
	var (
		res      driver.Result
		mismatch error
		room     bool // granted, and the key takes more
	)
	ms := millis(req.TTL)
	err := d.inTx(ctx, "acquire shared", func(tx *sql.Tx) error {
		res, mismatch, room = driver.Result{}, nil, false
		if _, err := tx.ExecContext(ctx, d.q(sqlDropLapsed), req.Key); err != nil {
			return err
		}
		var (
			held    bool
			leftMS  int64
			present bool
		)
		present, err := sqllease.Found(tx.QueryRowContext(ctx, d.q(sqlMainState), req.Key).Scan(&held, &leftMS), sql.ErrNoRows)
		if err != nil {
			return err
		}
		if present && held {
			res.HolderTTL = max(sqllease.FromMillis(leftMS), time.Millisecond)
			return nil
		}
		st, err := d.readShares(ctx, tx, req.Key, req.Token)
		if err != nil {
			return err
		}
		if st.grants > 0 && st.limit != req.Limit {
			mismatch = fmt.Errorf("%w: sqlite %s: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, d.name, req.Key, st.limit, req.Limit)
			return nil
		}
		if st.own > 0 {
			if _, err := tx.ExecContext(ctx, d.q(sqlShareRenew), req.Key, req.Token, ms, req.Metadata, req.Limit); err != nil {
				return err
			}
			res = driver.Result{Acquired: true, Fence: uint64(st.own)}
			return nil
		}
		if st.writers > 0 || (req.Limit > 0 && st.grants >= req.Limit) {
			res.HolderTTL = st.soonestGrant
			if res.HolderTTL == 0 {
				res.HolderTTL = st.soonestWriter
			}
			return nil
		}
		var fence int64
		if err := tx.QueryRowContext(ctx, d.q(sqlBumpFence), req.Key).Scan(&fence); err != nil {
			return err
		}
		if fence <= 0 {
			return fmt.Errorf("acquire shared returned fence %d; the table %q was modified by hand", fence, d.table)
		}
		if _, err := tx.ExecContext(ctx, d.q(sqlShareInsert), req.Key, req.Token, ms, req.Metadata, req.Limit, fence); err != nil {
			return err
		}
		res = driver.Result{Acquired: true, Fence: uint64(fence)}
		room = req.Limit == 0 || st.grants+1 < req.Limit
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			d.releaseAbandoned(req.Key, req.Token)
		}
		return driver.Result{}, err
	}
	if mismatch != nil {
		return driver.Result{}, mismatch
	}
	if room {
		// A release wakes one waiter of the key in this process; a new
		// grant that leaves room passes the wake-up on to the next, so
		// that readers waiting behind a writer all come in.
		d.hub.notify(d.table, req.Key)
	}
	return res, nil
}

// acquireWaiting is Acquire for an attempt with Hints.Wait, in one
// transaction: the exclusive upsert; when granted, the token's writer
// record goes; when refused because of live shared grants, the token is
// recorded as a waiting writer for the request's TTL.
func (d *sqliteDriver) acquireWaiting(ctx context.Context, req driver.Request) (driver.Result, error) {
	var res driver.Result
	err := d.inTx(ctx, "acquire", func(tx *sql.Tx) error {
		res = driver.Result{}
		var fence int64
		acquired, err := sqllease.Found(tx.StmtContext(ctx, d.acquire).QueryRowContext(ctx, req.Key, req.Token, millis(req.TTL), req.Metadata).Scan(&fence), sql.ErrNoRows)
		if err != nil {
			return err
		}
		if acquired {
			if fence <= 0 {
				return fmt.Errorf("acquire returned fence %d; the table %q was modified by hand", fence, d.table)
			}
			if _, err := tx.ExecContext(ctx, d.q(sqlWriterDrop), req.Key, req.Token); err != nil {
				return err
			}
			res = driver.Result{Acquired: true, Fence: uint64(fence)}
			return nil
		}
		var held bool
		var leftMS int64
		present, err := sqllease.Found(tx.QueryRowContext(ctx, d.q(sqlMainState), req.Key).Scan(&held, &leftMS), sql.ErrNoRows)
		if err != nil {
			return err
		}
		if present && held {
			res.HolderTTL = max(sqllease.FromMillis(leftMS), time.Millisecond)
			return nil
		}
		si, err := d.shareInfo(ctx, tx, req.Key)
		if err != nil {
			return err
		}
		if si.n == 0 {
			res.HolderTTL = time.Millisecond // the holder went in between
			return nil
		}
		if _, err := tx.ExecContext(ctx, d.q(sqlWriterRecord), req.Key, req.Token, millis(req.TTL)); err != nil {
			return err
		}
		res = driver.Result{HolderTTL: si.minTTL, WriterWaiting: true}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			d.releaseAbandoned(req.Key, req.Token)
		}
		return driver.Result{}, err
	}
	switch {
	case res.WriterWaiting:
		d.writers.Add(req.Key, req.Token)
	case res.Acquired:
		d.writers.Remove(req.Key, req.Token)
	}
	return res, nil
}

// shareInfo is sqlShareInfo's answer: the key's live shared grants.
type shareInfo struct {
	n              int
	fence          int64
	maxTTL, minTTL time.Duration
	metadata       string
}

// info is what Inspect reports of a key with shared grants.
func (si shareInfo) info() driver.Info {
	return driver.Info{Held: true, Fence: uint64(max(si.fence, 0)), TTL: si.maxTTL, Metadata: si.metadata, Waiters: -1}
}

// queryer is what shareInfo reads with: the handle or a transaction.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (d *sqliteDriver) shareInfo(ctx context.Context, q queryer, key string) (shareInfo, error) {
	var si shareInfo
	var maxMS, minMS int64
	if err := q.QueryRowContext(ctx, d.q(sqlShareInfo), key).Scan(&si.n, &si.fence, &maxMS, &minMS, &si.metadata); err != nil {
		return shareInfo{}, err
	}
	si.maxTTL, si.minTTL = sqllease.FromMillis(maxMS), max(sqllease.FromMillis(minMS), time.Millisecond)
	return si, nil
}

// readShareInfo is shareInfo on the handle, retried while the file is
// busy.
func (d *sqliteDriver) readShareInfo(ctx context.Context, key string) (shareInfo, error) {
	var si shareInfo
	err := d.retry(ctx, "inspect", func() (err error) {
		si, err = d.shareInfo(ctx, d.db, key)
		return err
	})
	return si, err
}

// refreshShare extends token's live shared grant of key.
func (d *sqliteDriver) refreshShare(ctx context.Context, key, token string, ttl time.Duration) error {
	var n int64
	err := d.retry(ctx, "refresh", func() error {
		r, err := d.db.ExecContext(ctx, d.q(sqlShareRefresh), key, token, millis(ttl))
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return driver.ErrNotHeld
	}
	return nil
}

// releaseShare deletes token's shared grant and writer record of key. It
// reports whether a live grant went, whether anything went, and, when a
// live grant went, whether the key has a waiting writer. The two
// statements are retried apart: the DELETE has committed when the second
// finds the database busy, and running it again would find nothing; when
// the second fails, the caller wakes every waiter.
func (d *sqliteDriver) releaseShare(ctx context.Context, key, token string) (held, found, writers bool, err error) {
	err = d.retry(ctx, "release", func() error {
		held, found = false, false
		rows, err := d.db.QueryContext(ctx, d.q(sqlShareRelease), key, token)
		err = sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
			var writer bool
			var ms int64
			if err := scan(&writer, &ms); err != nil {
				return err
			}
			found = true
			if !writer && ms > 0 {
				held = true
			}
			return nil
		})
		return err
	})
	if err != nil || !held {
		return held, found, false, err
	}
	if werr := d.retry(ctx, "release", func() error {
		return d.db.QueryRowContext(ctx, d.q(sqlWritersWaiting), key).Scan(&writers)
	}); werr != nil {
		// The grant went: whether a writer waits is unknown, so wake
		// every waiter, the writer among them.
		writers = true
	}
	return held, found, writers, nil
}

// Holders implements driver.SharedLocker with one statement.
func (d *sqliteDriver) Holders(ctx context.Context, key string) (driver.Holders, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Holders{}, err
	}
	var h driver.Holders
	err := d.retry(ctx, "holders", func() error {
		h = driver.Holders{}
		var newest int64
		rows, err := d.db.QueryContext(ctx, d.q(sqlHolders), key)
		return sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
			var (
				kind, limit int
				fence, ms   int64
				meta        string
			)
			if err := scan(&kind, &fence, &ms, &meta, &limit); err != nil {
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
			h.Holders = append(h.Holders, driver.Holder{Shared: kind == 1, Fence: uint64(max(fence, 0)), TTL: sqllease.FromMillis(ms), Metadata: meta})
			return nil
		})
	})
	if err != nil {
		return driver.Holders{}, err
	}
	slices.SortFunc(h.Holders, func(a, b driver.Holder) int { return cmp.Compare(a.Fence, b.Fence) })
	return h, nil
}

// forceShares deletes every shared grant and writer record of key in one
// statement and returns what Inspect reported of the live grants (Held
// false when there were none).
func (d *sqliteDriver) forceShares(ctx context.Context, key string) (driver.Info, error) {
	var si shareInfo
	err := d.retry(ctx, "force release", func() error {
		si = shareInfo{}
		rows, err := d.db.QueryContext(ctx, d.q(sqlShareForce), key)
		return sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
			var (
				writer    bool
				fence, ms int64
				meta      string
			)
			if err := scan(&writer, &fence, &ms, &meta); err != nil {
				return err
			}
			if writer || ms <= 0 {
				return nil
			}
			si.n++
			if fence > si.fence {
				si.fence, si.metadata = fence, meta
			}
			if ttl := sqllease.FromMillis(ms); ttl > si.maxTTL {
				si.maxTTL = ttl
			}
			return nil
		})
	})
	if err != nil || si.n == 0 {
		return driver.Info{}, err
	}
	return si.info(), nil
}

// checkShares checks the companion table. One that is missing (a lock
// table made before shared leases, opened with SkipCreateTable) is an
// error naming it, not ErrUnavailable: the database is there, the table
// is not.
func (d *sqliteDriver) checkShares(ctx context.Context) error {
	var missing error
	err := d.retry(ctx, "check table", func() error {
		rows, err := d.db.QueryContext(ctx, d.q(sqlCheckShares))
		if err != nil {
			if strings.Contains(err.Error(), "no such table") {
				missing = err
				return nil
			}
			return err
		}
		return rows.Close()
	})
	if missing != nil {
		return fmt.Errorf("sqlite %s: table %q of shared grants (beside lock table %q) is missing: create it (see the package docs) or open once without SkipCreateTable: %v", d.name, sharesTable(d.table), d.table, missing)
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("%w (is table %q of another shape?)", err, sharesTable(d.table))
	}
	return err
}

// refreshShares refreshes, with one statement, the shared grants among
// items whose exclusive refresh found nothing (errs[i] matching
// ErrNotHeld), and clears their errors.
func (d *sqliteDriver) refreshShares(ctx context.Context, items []driver.RefreshRequest, errs []error) {
	var idx []int
	for i, err := range errs {
		if errors.Is(err, driver.ErrNotHeld) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return
	}
	args := make([]any, 0, 3*len(idx))
	for _, i := range idx {
		args = append(args, items[i].Key, items[i].Token, millis(items[i].TTL))
	}
	done := map[keyToken]bool{}
	q := refreshBatchSQL(d.q(sqlShareRefreshBatch), len(idx))
	err := d.retry(ctx, "refresh", func() error {
		clear(done)
		rows, err := d.db.QueryContext(ctx, q, args...)
		return sqllease.QueryRows(rows, err, func(scan func(dest ...any) error) error {
			var kt keyToken
			if err := scan(&kt.key, &kt.token); err != nil {
				return err
			}
			done[kt] = true
			return nil
		})
	})
	for _, i := range idx {
		switch {
		case err != nil:
			errs[i] = err
		case done[keyToken{items[i].Key, items[i].Token}]:
			errs[i] = nil
		}
	}
}
