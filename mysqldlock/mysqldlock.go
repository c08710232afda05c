package mysqldlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// DefaultTable is the lock table used when Options.Table is empty.
const DefaultTable = sqllease.DefaultTable

// MinTTL is the shortest TTL the driver accepts.
const MinTTL = 10 * time.Millisecond

// MaxTTL is the longest TTL the driver accepts, the portable maximum
// (driver.MaxTTL, about 285 years); a longer one is an error matching
// ErrInvalidTTL. The lock table's expires_at is a DATETIME(6), good to the
// year 9999 (not a TIMESTAMP, which ends in 2038); the server adds the TTL
// as an INTERVAL in microseconds and reports remaining leases with
// TIMESTAMPDIFF in microseconds, all far inside their ranges at MaxTTL.
const MaxTTL = driver.MaxTTL

// Limits of the table's columns.
const (
	maxToken    = 1024
	maxMetadata = 65535
)

// Options configure a driver made by NewClient, NewDriver or a URLOpener.
// The zero value is the default.
type Options struct {
	// Table is the lock table, "name" or "database.name": ASCII letters,
	// digits and '_'. Default DefaultTable ("dlock_locks") in the
	// connection's database.
	Table string
	// SkipCreateTable leaves the schema alone: the table must exist.
	// Default false: the driver creates it when missing.
	SkipCreateTable bool
}

// NewClient returns a dlock Client that keeps its locks in db, which stays
// the application's: Close of the client does not close it. db must use
// github.com/go-sql-driver/mysql (or another driver that reports
// LAST_INSERT_ID(expr) as the insert id). ctx bounds the table check (and
// creation).
func NewClient(ctx context.Context, db *sql.DB, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(ctx, db, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// NewDriver returns the driver.Locker behind NewClient, for dlock.NewClient
// and the conformance suite.
func NewDriver(ctx context.Context, db *sql.DB, opts Options) (driver.Locker, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: mysqldlock: nil *sql.DB", driver.ErrInvalidOption)
	}
	d, err := open(ctx, db, opts, "", "", nil)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// myDriver is the lock driver over one table.
type myDriver struct {
	sqllease.Server  // backend, address, password and table for errors
	sqllease.Closing // Check and Close

	db  *sql.DB
	st  statements
	hub sqllease.Hub

	// batchStatements counts the statements RefreshBatch has sent.
	batchStatements atomic.Int64

	// writers are the tokens this driver recorded as waiting writers.
	writers sqllease.Tokens

	closeFn func() error // closes a pool the driver opened, or nil
}

func open(ctx context.Context, db *sql.DB, cfg Options, addr, secret string, closeFn func() error) (*myDriver, error) {
	table, err := sqllease.ParseTable(cfg.Table)
	if err != nil {
		return nil, err
	}
	d := &myDriver{
		Server:  sqllease.Server{Package: "mysqldlock", Backend: "mysql", Addr: addr, Secret: secret, Table: table, Refused: serverRefused},
		db:      db,
		st:      newStatements(table.Quote("`"), table.Shares().Quote("`")),
		closeFn: closeFn,
	}
	if err := d.prepare(ctx, !cfg.SkipCreateTable); err != nil {
		return nil, err
	}
	return d, nil
}

// prepare checks that the server answers, creates the table when asked
// and missing, and checks its shape.
func (d *myDriver) prepare(ctx context.Context, create bool) error {
	if err := d.db.PingContext(ctx); err != nil {
		return d.Unavailable(err)
	}
	if create {
		if err := d.createTable(ctx); err != nil {
			return err
		}
	}
	if _, err := d.db.ExecContext(ctx, d.st.check); err != nil {
		return d.Wrap("checking the lock table", err)
	}
	if _, err := d.db.ExecContext(ctx, d.st.checkShares); err != nil {
		return d.Wrap(fmt.Sprintf("checking table %s of shared grants (create it as docs/sql.md shows, or open once with create_table on)", d.Table.Shares()), err)
	}
	return nil
}

// createTable creates the table when it is missing. A named lock
// (GET_LOCK) serialises processes that start at once; a "table exists"
// error from a creator elsewhere (a cluster, where named locks are local)
// counts as success.
func (d *myDriver) createTable(ctx context.Context) error {
	var schema any
	if d.Table.Schema != "" {
		schema = d.Table.Schema
	}
	var n, m int
	if err := d.db.QueryRowContext(ctx, sqlTableExists, schema, d.Table.Name).Scan(&n); err != nil {
		return d.Wrap("checking for the lock table", err)
	}
	if err := d.db.QueryRowContext(ctx, sqlTableExists, schema, d.Table.Shares().Name).Scan(&m); err != nil {
		return d.Wrap("checking for the table of shared grants", err)
	}
	if n > 0 && m > 0 {
		return nil
	}
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return d.Wrap("creating the lock table", err)
	}
	defer conn.Close()
	lockName := "dlock_create_" + sqllease.Hash(d.Table.String(), 32)
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 30)", lockName).Scan(&got); err != nil {
		return d.Wrap("creating the lock table", err)
	}
	if got.Valid && got.Int64 == 1 {
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, _ = conn.ExecContext(rctx, "DO RELEASE_LOCK(?)", lockName)
		}()
	}
	if _, err := conn.ExecContext(ctx, d.st.create); err != nil && !isCode(err, 1050) {
		return d.Wrap("creating the lock table", err)
	}
	if _, err := conn.ExecContext(ctx, d.st.createShares); err != nil && !isCode(err, 1050) {
		return d.Wrap("creating the table of shared grants", err)
	}
	return nil
}

// Acquire implements driver.Locker with one INSERT ... ON DUPLICATE KEY
// UPDATE; when that does not report a grant of an existing row (a new row,
// or another owner's live lease) a SELECT of the row tells which, and the
// holder's remaining lease.
func (d *myDriver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
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
	if req.Hints.Wait && d.writers.Has(req.Key, req.Token) {
		// Its writer record goes with the grant.
		return d.acquireWaiting(ctx, req, key, tok, us, meta)
	}
	var (
		res sql.Result
		err error
	)
	// A deadlock victim (1213) changed nothing: an insert of a new key
	// can lose one to the gap locks of a batched refresh or of another
	// insert nearby, and is sent again (up to 3 times) rather than
	// reported as a refusal of a key nobody holds.
	for range 3 {
		res, err = d.db.ExecContext(ctx, d.st.acquire, key, tok, us, meta, tok, tok, meta, tok, tok, tok, us)
		if err == nil || !isCode(err, 1213) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		if isCode(err, 1213, 1205) { // deadlock victim again, lock wait timeout
			return driver.Result{}, nil
		}
		return driver.Result{}, d.Wrap("acquire", err)
	}
	if id, err := res.LastInsertId(); err == nil && id > 0 {
		return driver.Result{Acquired: true, Fence: uint64(id)}, nil
	}
	r, err := d.state(ctx, key)
	switch {
	case err != nil:
		return driver.Result{}, d.Wrap("acquire", err)
	case r.Held && r.Token == req.Token && r.Fence > 0:
		return driver.Result{Acquired: true, Fence: uint64(r.Fence)}, nil
	case r.Held && r.Token == marker && req.Hints.Wait:
		// Refused by shared grants: again, recording the waiting writer.
		return d.acquireWaiting(ctx, req, key, tok, us, meta)
	case r.Held && r.Token == marker:
		return driver.Result{HolderTTL: d.shortestShare(ctx, key, r.TTL)}, nil
	case r.Token != "":
		return driver.Result{HolderTTL: r.TTL}, nil
	}
	return driver.Result{}, nil
}

// state reads a key's row (the zero Row when there is none).
func (d *myDriver) state(ctx context.Context, key []byte) (sqllease.Row, error) {
	var (
		token, meta []byte
		fence       uint64
		us          int64
	)
	found, err := sqllease.Found(d.db.QueryRowContext(ctx, d.st.state, key).Scan(&token, &fence, &us, &meta), sql.ErrNoRows)
	if !found {
		return sqllease.Row{}, err
	}
	left := sqllease.FromMicros(us)
	return sqllease.Row{Held: len(token) > 0 && left > 0, Token: string(token), Fence: int64(fence), TTL: left, Metadata: string(meta)}, nil
}

// Refresh implements driver.Locker with one owner-checked UPDATE.
func (d *myDriver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	res, err := d.db.ExecContext(ctx, d.st.refresh, sqllease.Micros(ttl), []byte(key), []byte(token))
	if err != nil {
		return d.Wrap("refresh", err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		return nil
	}
	// Zero rows changed: not ours, or (in the same microsecond) the same
	// expiry written again, which MySQL does not count as a change.
	r, err := d.state(ctx, []byte(key))
	if err != nil {
		return d.Wrap("refresh", err)
	}
	if r.Held && r.Token == token {
		return nil
	}
	if r.Held && r.Token == marker {
		return d.refreshShare(ctx, key, token, ttl)
	}
	return sqllease.NotHeld(key)
}

// Release implements driver.Locker with one owner-checked UPDATE, then
// wakes this driver's own waiters for the key.
func (d *myDriver) Release(ctx context.Context, key, token string) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	d.writers.Remove(key, token)
	res, err := d.db.ExecContext(ctx, d.st.release, []byte(key), []byte(token))
	if err != nil {
		return d.Wrap("release", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return d.releaseShare(ctx, key, token)
	}
	d.hub.Notify(key)
	return nil
}

// Inspect implements driver.Locker.
func (d *myDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Info{}, err
	}
	r, err := d.state(ctx, []byte(key))
	if err != nil {
		return driver.Info{}, d.Wrap("inspect", err)
	}
	return r.Info(), nil
}

// WatchReleases implements driver.Notifier for the waiters of this driver
// only: a release through the same driver wakes them at once. MySQL has no
// notifications between connections, so waiters on other drivers (other
// processes) wake on their retry backoff, which never exceeds the holder's
// remaining lease.
func (d *myDriver) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if err := d.Check(ctx); err != nil {
		return nil, nil, err
	}
	ch, stop := d.hub.Watch(key)
	return ch, stop, nil
}

// Capabilities implements driver.Locker.
func (d *myDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Backend: "mysql", Fencing: true, ReacquireWithToken: true, MinTTL: MinTTL, MaxTTL: MaxTTL}
}

// Close closes the connection pool of a driver opened from a URL; a pool
// the application passed in stays open. It is safe to call more than once.
func (d *myDriver) Close() error {
	return d.CloseOnce(func() error {
		if d.closeFn != nil {
			return d.closeFn()
		}
		return nil
	})
}

// serverRefused reports a server error about the statement (sqllease.Server's
// Refused): lost connections and servers going away are ErrUnavailable.
func serverRefused(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && !unavailableCode(me.Number)
}

// unavailableCode reports server errors that mean the server is going away
// or cannot take the connection: too many connections (1040), shutdown in
// progress (1053), connection or query killed (1927, 1317), idle
// disconnect (4031), read-only failover (1290, 1836).
func unavailableCode(n uint16) bool {
	switch n {
	case 1040, 1053, 1317, 1927, 4031, 1290, 1836:
		return true
	}
	return false
}

func isCode(err error, codes ...uint16) bool {
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	for _, c := range codes {
		if me.Number == c {
			return true
		}
	}
	return false
}
