package sqlitedlock

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// minVersion is the oldest SQLite with RETURNING.
const minVersion = "3.35.0"

// sqliteDriver implements driver.Locker and driver.Notifier over one
// database/sql handle.
type sqliteDriver struct {
	sqllease.Closing // Check and Close

	db    *sql.DB
	ownDB bool   // opened by this package, closed by Close
	name  string // the file path, for messages
	table string
	hub   *hub

	acquire, refresh, release, inspect *sql.Stmt

	// writers are the tokens this driver recorded as waiting writers.
	writers sqllease.Tokens

	// batchStmts are the prepared refresh statements for 1, 2, 4, ...
	// locks, made when first needed.
	batchMu    sync.Mutex
	batchStmts [batchSizes]*sql.Stmt
	// batchStatements counts the statements RefreshBatch has sent.
	batchStatements atomic.Int64

	mu       sync.Mutex // guards adding to cleanups against Close
	cleanups sync.WaitGroup
}

var (
	_ driver.Locker          = (*sqliteDriver)(nil)
	_ driver.Notifier        = (*sqliteDriver)(nil)
	_ driver.ReleaseObserver = (*sqliteDriver)(nil)
)

// newDriver checks the SQLite version, creates and checks the table and
// prepares the statements. The hub that carries release notifications is
// the one of the database file, as SQLite names it, unless hubID is given.
func newDriver(ctx context.Context, db *sql.DB, cfg Options, name, hubID string, own bool) (*sqliteDriver, error) {
	d := &sqliteDriver{db: db, ownDB: own, name: name, table: cfg.Table}
	var version, file string
	err := d.retry(ctx, "open", func() error {
		return db.QueryRowContext(ctx, "SELECT sqlite_version(), (SELECT file FROM pragma_database_list WHERE name = 'main')").Scan(&version, &file)
	})
	if err != nil {
		return nil, err
	}
	if hubID == "" {
		hubID = "file:" + file
		if file == "" {
			// A private in-memory database: only this *sql.DB sees it.
			hubID = fmt.Sprintf("db:%p", db)
		} else if !own {
			d.name = file
		}
	}
	if !versionAtLeast(version, minVersion) {
		return nil, fmt.Errorf("%w: sqlite %s: SQLite %s is too old; dlock needs %s or newer (for RETURNING)", driver.ErrUnavailable, d.name, version, minVersion)
	}
	if !cfg.SkipCreateTable {
		for _, create := range []string{sqlCreateTable, sqlCreateShares} {
			err := d.retry(ctx, "create table", func() error {
				_, err := db.ExecContext(ctx, statement(create, cfg.Table))
				return err
			})
			if err != nil {
				return nil, err
			}
		}
	}
	err = d.retry(ctx, "check table", func() error {
		rows, err := db.QueryContext(ctx, statement(sqlCheckTable, cfg.Table))
		if err != nil {
			return err
		}
		return rows.Close()
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w (is table %q missing or of another shape?)", err, cfg.Table)
	}
	if err := d.checkShares(ctx); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&d.acquire, sqlAcquire},
		{&d.refresh, sqlRefresh},
		{&d.release, sqlRelease},
		{&d.inspect, sqlInspect},
	} {
		err := d.retry(ctx, "prepare", func() error {
			s, err := db.PrepareContext(ctx, statement(p.sql, cfg.Table))
			*p.stmt = s
			return err
		})
		if err != nil {
			d.closeStatements()
			return nil, err
		}
	}
	d.hub = acquireHub(hubID)
	return d, nil
}

// versionAtLeast compares dotted decimal versions.
func versionAtLeast(have, want string) bool {
	h, w := strings.Split(have, "."), strings.Split(want, ".")
	for i := range w {
		var hv int
		if i < len(h) {
			hv, _ = strconv.Atoi(h[i])
		}
		wv, _ := strconv.Atoi(w[i])
		if hv != wv {
			return hv > wv
		}
	}
	return true
}

// MinTTL is the shortest TTL the driver accepts.
const MinTTL = 10 * time.Millisecond

// MaxTTL is the longest TTL the driver accepts, the portable maximum
// (driver.MaxTTL, about 285 years); a longer one is an error matching
// ErrInvalidTTL. Expiries are Unix milliseconds on the engine's clock, in a
// 64-bit INTEGER column: now plus MaxTTL is far inside its range, and the
// remaining lease read back fits a time.Duration.
const MaxTTL = driver.MaxTTL

// millis rounds ttl up to whole milliseconds, so that the lease the
// database keeps is never shorter than asked.
func millis(ttl time.Duration) int64 { return sqllease.Millis(ttl) }

// Acquire implements driver.Locker with one upsert statement.
func (d *sqliteDriver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Result{}, err
	}
	if req.Hints.Wait && d.writers.Has(req.Key, req.Token) {
		// Its writer record goes with the grant.
		return d.acquireWaiting(ctx, req)
	}
	var (
		fence    int64
		acquired bool
	)
	err := d.retry(ctx, "acquire", func() (err error) {
		// No row: held by another owner, the upsert wrote nothing.
		acquired, err = sqllease.Found(d.acquire.QueryRowContext(ctx, req.Key, req.Token, millis(req.TTL), req.Metadata).Scan(&fence), sql.ErrNoRows)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			// The context may have ended after the grant committed; the
			// caller will never use this token, so free the key now
			// rather than at the end of the lease.
			d.releaseAbandoned(req.Key, req.Token)
		}
		return driver.Result{}, err
	}
	if acquired {
		if fence <= 0 {
			return driver.Result{}, fmt.Errorf("sqlite %s: acquire returned fence %d; the table %q was modified by hand", d.name, fence, d.table)
		}
		return driver.Result{Acquired: true, Fence: uint64(fence)}, nil
	}
	// Not acquired: read how long the holder has left, so that a waiter
	// sleeps no longer than that. If the lease ended in between, ask for a
	// prompt retry.
	r, err := d.read(ctx, req.Key)
	switch {
	case err != nil && ctx.Err() != nil:
		return driver.Result{}, err
	case err != nil:
		return driver.Result{}, nil // holder's TTL unknown
	case r.Held:
		return driver.Result{HolderTTL: r.TTL}, nil
	}
	if si, err := d.readShareInfo(ctx, req.Key); err == nil && si.n > 0 {
		if req.Hints.Wait {
			// Refused by shared grants: again, recording the waiting
			// writer.
			return d.acquireWaiting(ctx, req)
		}
		return driver.Result{HolderTTL: si.minTTL}, nil
	} else if err != nil && ctx.Err() != nil {
		return driver.Result{}, err
	}
	return driver.Result{HolderTTL: time.Millisecond}, nil
}

// releaseAbandoned releases key for token in the background, bounded, so
// that a grant whose reply was lost to a cancelled context does not keep
// the key until its lease ends.
func (d *sqliteDriver) releaseAbandoned(key, token string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Closed() {
		return
	}
	d.cleanups.Add(1)
	go func() {
		defer d.cleanups.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = d.releaseToken(ctx, key, token)
	}()
}

// Refresh implements driver.Locker.
func (d *sqliteDriver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	err := d.update(ctx, "refresh", d.refresh, key, token, millis(ttl))
	if err == driver.ErrNotHeld {
		return d.refreshShare(ctx, key, token, ttl)
	}
	return err
}

// Release implements driver.Locker. It keeps the key's row, and so its
// fence, and wakes one waiter for the key in this process. A token that
// holds no exclusive lease has its shared grant and writer record of the
// key deleted (a second statement).
func (d *sqliteDriver) Release(ctx context.Context, key, token string) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	d.writers.Remove(key, token)
	return d.releaseToken(ctx, key, token)
}

// releaseToken is Release after the checks.
func (d *sqliteDriver) releaseToken(ctx context.Context, key, token string) error {
	err := d.update(ctx, "release", d.release, key, token)
	if err == driver.ErrNotHeld {
		return d.releaseShareWaking(ctx, key, token)
	}
	if err != nil {
		return err
	}
	d.hub.notify(d.table, key)
	return nil
}

// releaseShareWaking deletes token's shared grant and writer record of key
// (releaseShare) and wakes this process's waiters of the key when anything
// went. It returns ErrNotHeld unless a live grant went.
func (d *sqliteDriver) releaseShareWaking(ctx context.Context, key, token string) error {
	held, found, writers, err := d.releaseShare(ctx, key, token)
	if err != nil {
		return err
	}
	switch {
	case writers:
		// A waiting writer holds the readers back: wake every waiter
		// of the key in this process, so that the writer, whose turn
		// it is, is among them.
		d.hub.notifyAll(d.table, key)
	case found:
		d.hub.notify(d.table, key)
	}
	if !held {
		return driver.ErrNotHeld
	}
	return nil
}

// RefreshShared implements driver.ShareKeeper with one statement.
func (d *sqliteDriver) RefreshShared(ctx context.Context, key, token string, ttl time.Duration) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	return d.refreshShare(ctx, key, token, ttl)
}

// ReleaseShared implements driver.ShareKeeper: Release without its first
// statement, which looks for an exclusive lease of the token.
func (d *sqliteDriver) ReleaseShared(ctx context.Context, key, token string) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	return d.releaseShareWaking(ctx, key, token)
}

// update runs an owner-checked UPDATE and reports ErrNotHeld when it
// changed no row.
func (d *sqliteDriver) update(ctx context.Context, op string, stmt *sql.Stmt, args ...any) error {
	var n int64
	err := d.retry(ctx, op, func() error {
		r, err := stmt.ExecContext(ctx, args...)
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

// read reads key's row without writing (the zero Row when there is none).
func (d *sqliteDriver) read(ctx context.Context, key string) (sqllease.Row, error) {
	var (
		r     sqllease.Row
		ms    int64 // zero or less once expired
		found bool
	)
	err := d.retry(ctx, "inspect", func() (err error) {
		found, err = sqllease.Found(d.inspect.QueryRowContext(ctx, key).Scan(&r.Token, &r.Fence, &ms, &r.Metadata), sql.ErrNoRows)
		return err
	})
	if err != nil || !found {
		return sqllease.Row{}, err
	}
	r.TTL = sqllease.FromMillis(ms)
	r.Held = r.Token != "" && r.TTL > 0
	return r, nil
}

// Inspect implements driver.Locker.
func (d *sqliteDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Info{}, err
	}
	r, err := d.read(ctx, key)
	if err != nil {
		return driver.Info{}, err
	}
	if !r.Held {
		si, err := d.readShareInfo(ctx, key)
		if err != nil {
			return driver.Info{}, err
		}
		if si.n > 0 {
			return si.info(), nil
		}
	}
	return r.Info(), nil
}

// Capabilities implements driver.Locker.
func (d *sqliteDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Backend: "sqlite", Fencing: true, ReacquireWithToken: true, MinTTL: MinTTL, MaxTTL: MaxTTL}
}

// Close implements driver.Locker. It closes the database handle only when
// the driver opened it.
func (d *sqliteDriver) Close() error {
	return d.CloseOnce(func() error {
		// releaseAbandoned adds cleanups only under mu while the driver is
		// open: none starts once mu is taken here, and those under way do
		// not need mu.
		d.mu.Lock()
		d.cleanups.Wait()
		d.mu.Unlock()
		d.closeStatements()
		releaseHub(d.hub)
		if d.ownDB {
			return d.db.Close()
		}
		return nil
	})
}

func (d *sqliteDriver) closeStatements() {
	d.batchMu.Lock()
	stmts := append([]*sql.Stmt{d.acquire, d.refresh, d.release, d.inspect}, d.batchStmts[:]...)
	d.batchMu.Unlock()
	for _, s := range stmts {
		if s != nil {
			_ = s.Close()
		}
	}
}
