package pgdlock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

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
// ErrInvalidTTL. The server computes expiries as a timestamptz (good to the
// year 294276) plus the TTL in microseconds as a bigint interval, and
// reports remaining leases in microseconds as a bigint: all far inside
// their ranges at MaxTTL.
const MaxTTL = driver.MaxTTL

// Options configure a driver made by NewClient, NewClientDB, NewDriver,
// NewDriverDB, Open, OpenDriver or a URLOpener. The zero value is the
// default.
type Options struct {
	// Table is the lock table, "name" or "schema.name": ASCII letters,
	// digits and '_', used exactly as given (case-sensitive). Default
	// DefaultTable ("dlock_locks") in the connection's search_path.
	Table string
	// SkipCreateTable leaves the schema alone: the table must exist.
	// Default false: the driver creates it when missing.
	SkipCreateTable bool
	// DisableNotify turns LISTEN/NOTIFY off: releases send no
	// notification and waiters poll with their retry strategy (bounded by
	// the holder's remaining lease). Use it behind a pooler that cannot
	// LISTEN, such as PgBouncer in transaction mode. Default false:
	// notifications on.
	DisableNotify bool
}

// NewClient returns a dlock Client that keeps its locks in the database of
// pool, which stays the application's: Close of the client does not close
// it. Release notifications use one extra connection made with the pool's
// configuration while anyone waits. ctx bounds the table check (and
// creation).
func NewClient(ctx context.Context, pool *pgxpool.Pool, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(ctx, pool, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// NewClientDB is NewClient for a database/sql handle, normally over pgx's
// driver (github.com/jackc/pgx/v5/stdlib); release notifications then take
// one connection of db while anyone waits. The statements use only $n
// placeholders, bytea, bigint and text, so other PostgreSQL drivers should
// work, without notifications: their waiters poll.
func NewClientDB(ctx context.Context, db *sql.DB, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriverDB(ctx, db, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// NewDriver returns the driver.Locker behind NewClient, for
// dlock.NewClient and the conformance suite.
func NewDriver(ctx context.Context, pool *pgxpool.Pool, opts Options) (driver.Locker, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pgdlock: nil pool", driver.ErrInvalidOption)
	}
	cc := pool.Config().ConnConfig
	return open(ctx, poolQuerier{pool}, opts, hostPort(cc.Host, cc.Port), cc.Password, nil)
}

// NewDriverDB returns the driver.Locker behind NewClientDB.
func NewDriverDB(ctx context.Context, db *sql.DB, opts Options) (driver.Locker, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: pgdlock: nil *sql.DB", driver.ErrInvalidOption)
	}
	return open(ctx, dbQuerier{db}, opts, "", "", nil)
}

// pgDriver is the lock driver over one table.
type pgDriver struct {
	sqllease.Server  // backend, address, password and table for errors
	sqllease.Closing // Check and Close

	q   querier
	st  statements
	lis *listener

	// batchStatements counts the statements RefreshBatch has sent.
	batchStatements atomic.Int64

	// writers are the tokens this driver recorded as waiting writers.
	writers sqllease.Tokens

	// leaves are the removals of abandoned queued shares under way.
	leaves leaves

	closeFn func() // closes a pool the driver opened, or nil
}

// pollOnly hides the Notifier of a driver whose notifications are off.
type pollOnly struct{ driver.Locker }

func open(ctx context.Context, q querier, cfg Options, addr, secret string, closeFn func()) (driver.Locker, error) {
	table, err := sqllease.ParseTable(cfg.Table)
	if err != nil {
		return nil, err
	}
	d := &pgDriver{
		Server:  sqllease.Server{Package: "pgdlock", Backend: "postgres", Addr: addr, Secret: secret, Table: table, Refused: serverRefused},
		q:       q,
		st:      newStatements(table.Quote(`"`), sharesTable(table).Quote(`"`), advisoryID(table)),
		closeFn: closeFn,
	}
	if err := d.prepare(ctx, !cfg.SkipCreateTable); err != nil {
		return nil, err
	}
	if cfg.DisableNotify || !q.canListen() {
		return pollOnly{d}, nil
	}
	d.lis = newListener(q, channelName(table))
	return d, nil
}

// prepare checks that the server answers, creates the table when asked
// and missing, and checks its shape.
func (d *pgDriver) prepare(ctx context.Context, create bool) error {
	var one int
	if _, err := d.q.queryRow(ctx, "SELECT 1", nil, &one); err != nil {
		return d.Unavailable(err)
	}
	if create {
		var exists, sharesExist bool
		if _, err := d.q.queryRow(ctx, sqlTableExists, []any{d.Table.Quote(`"`)}, &exists); err != nil {
			return d.Wrap("checking for the lock table", err)
		}
		if _, err := d.q.queryRow(ctx, sqlTableExists, []any{sharesTable(d.Table).Quote(`"`)}, &sharesExist); err != nil {
			return d.Wrap("checking for the table of shared grants", err)
		}
		if !exists || !sharesExist {
			if _, err := d.q.exec(ctx, d.st.create); err != nil {
				return d.Wrap("creating the lock table", err)
			}
		}
	}
	if _, err := d.q.exec(ctx, d.st.check); err != nil {
		return d.Wrap("checking the lock table", err)
	}
	if _, err := d.q.exec(ctx, d.st.checkShares); err != nil {
		return d.Wrap(fmt.Sprintf("checking table %s of shared grants (create it as docs/sql.md shows, or open once with create_table on)", sharesTable(d.Table)), err)
	}
	return nil
}

// advisoryID is the advisory lock key that serialises creating table.
func advisoryID(t sqllease.Table) int64 {
	h := fnv.New64a()
	h.Write([]byte("dlock:create:" + t.String()))
	return int64(h.Sum64())
}

// channelName is the NOTIFY channel of a table: fixed per table name and
// short enough for an identifier.
func channelName(t sqllease.Table) string {
	return "dlock_release_" + sqllease.Hash(t.String(), 16)
}

// payload is the notification payload for key: a digest, so that any key
// fits and none can break the message.
func payload(key string) string { return sqllease.Hash(key, 32) }

// Acquire implements driver.Locker with one INSERT ... ON CONFLICT.
func (d *pgDriver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Result{}, err
	}
	if req.Hints.Wait && d.writers.Has(req.Key, req.Token) {
		// Its writer record goes with the grant.
		return d.acquireWaiting(ctx, req)
	}
	var (
		acquired, shared bool
		fence            int64
		holderUS         int64
	)
	args := []any{[]byte(req.Key), []byte(req.Token), sqllease.Micros(req.TTL), cleanText(req.Metadata)}
	found, err := d.q.queryRow(ctx, d.st.acquire, args, &acquired, &fence, &holderUS, &shared)
	switch {
	case err == nil && found && !acquired && shared && req.Hints.Wait:
		// Refused by shared grants: again, recording the waiting writer.
		return d.acquireWaiting(ctx, req)
	case err != nil && contention(err):
		return driver.Result{}, nil // another transaction won the row
	case err != nil:
		return driver.Result{}, d.Wrap("acquire", err)
	case !found:
		return driver.Result{}, nil // held by a grant newer than our snapshot
	case !acquired:
		return driver.Result{HolderTTL: sqllease.FromMicros(holderUS)}, nil
	case fence <= 0:
		return driver.Result{}, fmt.Errorf("pgdlock: acquire: table %s returned fence %d", d.Table, fence)
	}
	return driver.Result{Acquired: true, Fence: uint64(fence)}, nil
}

// Refresh implements driver.Locker with one owner-checked UPDATE; a token
// without an exclusive lease then refreshes its shared grant (a second
// statement).
func (d *pgDriver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	n, err := d.q.exec(ctx, d.st.refresh, []byte(key), []byte(token), sqllease.Micros(ttl))
	if err != nil {
		return d.Wrap("refresh", err)
	}
	if n == 0 {
		return d.refreshShare(ctx, key, token, ttl)
	}
	return nil
}

// Release implements driver.Locker with one owner-checked UPDATE that also
// notifies waiters (on commit) when notifications are on; a token without
// an exclusive lease then releases its shared grant or writer record (a
// transaction).
func (d *pgDriver) Release(ctx context.Context, key, token string) error {
	if err := d.Check(ctx); err != nil {
		return err
	}
	d.writers.Remove(key, token)
	var (
		n   int64
		err error
	)
	if d.lis != nil {
		_, err = d.q.queryRow(ctx, d.st.releaseNotify, []any{[]byte(key), []byte(token), d.lis.channel, payload(key)}, &n)
	} else {
		n, err = d.q.exec(ctx, d.st.release, []byte(key), []byte(token))
	}
	if err != nil {
		return d.Wrap("release", err)
	}
	if n == 0 {
		return d.releaseShare(ctx, key, token)
	}
	return nil
}

// Inspect implements driver.Locker.
func (d *pgDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Info{}, err
	}
	if err := d.leaves.await(ctx, key); err != nil {
		return driver.Info{}, err
	}
	var (
		r     sqllease.Row
		us, n int64
	)
	if _, err := d.q.queryRow(ctx, d.st.inspect, []any{[]byte(key)}, &r.Held, &r.Fence, &us, &r.Metadata, &n); err != nil {
		return driver.Info{}, d.Wrap("inspect", err)
	}
	r.TTL = sqllease.FromMicros(us)
	in := r.Info()
	in.Waiters = int(n)
	return in, nil
}

// WatchReleases implements driver.Notifier over LISTEN/NOTIFY: all watches
// of the driver share one listening connection.
func (d *pgDriver) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if err := d.Check(ctx); err != nil {
		return nil, nil, err
	}
	return d.lis.watch(ctx, payload(key))
}

// Capabilities implements driver.Locker.
func (d *pgDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Backend: "postgres", Fencing: true, ReacquireWithToken: true, MinTTL: MinTTL, MaxTTL: MaxTTL}
}

// Close stops the listener and, for a driver opened from a URL, closes its
// pool. It is safe to call more than once.
func (d *pgDriver) Close() error {
	return d.CloseOnce(func() error {
		if d.lis != nil {
			d.lis.close()
		}
		d.leaves.awaitAll()
		if d.closeFn != nil {
			d.closeFn()
		}
		return nil
	})
}

// serverRefused reports a server error about the statement
// (sqllease.Server's Refused): lost connections and servers shutting down
// or refusing connections are ErrUnavailable.
func serverRefused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && !unavailableCode(pe.Code)
}

// unavailableCode reports SQLSTATEs that mean the server is going away or
// cannot take the connection: connection exceptions (08), insufficient
// resources (53), operator intervention (57P0x).
func unavailableCode(code string) bool {
	return strings.HasPrefix(code, "08") || strings.HasPrefix(code, "53") || strings.HasPrefix(code, "57P")
}

// contention reports errors that only mean another transaction got to the
// row first: serialization failures and deadlocks.
func contention(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "55P03")
}

// cleanText makes s storable in a text column: PostgreSQL text holds no NUL
// and only valid encoding.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

func hostPort(host string, port uint16) string {
	if host == "" {
		return ""
	}
	if strings.HasPrefix(host, "/") {
		return fmt.Sprintf("%s/.s.PGSQL.%d", host, port)
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
