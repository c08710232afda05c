package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/pgdlock"
)

// pollInterval is how often the hand-written SQL lock polls a held key.
const pollInterval = 100 * time.Millisecond

// The hand-written lock many teams start from: a lease table, an
// INSERT ... ON CONFLICT that takes a free or expired row, a DELETE that
// releases, an UPDATE that refreshes, and a fixed polling interval.
const (
	sqlCreate = `CREATE TABLE IF NOT EXISTS bench_locks (
	name text PRIMARY KEY,
	owner text NOT NULL,
	expires_at timestamptz NOT NULL)`
	sqlAcquire = `INSERT INTO bench_locks (name, owner, expires_at)
VALUES ($1, $2, now() + $3 * interval '1 millisecond')
ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
WHERE bench_locks.expires_at < now()`
	sqlRelease = `DELETE FROM bench_locks WHERE name = $1 AND owner = $2`
	sqlRefresh = `UPDATE bench_locks SET expires_at = now() + $3 * interval '1 millisecond' WHERE name = $1 AND owner = $2`
)

// stmtCounter is a pgx tracer counting the requests clients send: a
// statement, or a batch of statements sent together (one round trip, as
// pgdlock sends a row lock with the statement that follows it).
// PostgreSQL's own statistics are flushed lazily (up to seconds later), so
// the count is taken on the client side.
type stmtCounter struct{ n atomic.Int64 }

func (c *stmtCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *stmtCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *stmtCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *stmtCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (c *stmtCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

type pgServer struct {
	srv  *testserver.Postgres
	sent *stmtCounter
}

// pool opens a pgx pool with pgx's defaults and the statement counter.
func (p *pgServer) pool(ctx context.Context) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(p.srv.URL())
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.Tracer = p.sent
	return pgxpool.NewWithConfig(ctx, cfg)
}

func (p *pgServer) counts(context.Context) (counts, error) {
	return counts{server: p.sent.n.Load(), roundTrips: -1}, nil
}

func newPostgresBackend(ctx context.Context, t *serverT) (*backend, error) {
	p := &pgServer{sent: &stmtCounter{}}
	if err := startBackend(t, func(t *serverT) { p.srv = testserver.StartPostgres(t) }); err != nil {
		return nil, err
	}
	pool, err := p.pool(ctx)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, sqlCreate); err != nil {
		return nil, err
	}
	version := "?"
	_ = pool.QueryRow(ctx, "SHOW server_version").Scan(&version)
	b := &backend{
		name:       "postgres",
		title:      "PostgreSQL",
		version:    "PostgreSQL " + version,
		serverUnit: "SQL statements the clients sent (pgx tracer)",
		counter:    p.counts,
	}
	open := func() (*dlock.Client, func(), error) {
		pool, err := p.pool(ctx)
		if err != nil {
			return nil, nil, err
		}
		c, err := pgdlock.NewClient(ctx, pool, pgdlock.Options{})
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return c, func() { _ = c.Close(); pool.Close() }, nil
	}
	b.subjects = []*subject{
		{id: "dlock", backend: "postgres", name: "dlock", setting: "defaults", role: roleDlock, uncontended: true, hotKey: true,
			contenders: dlockContenders(open), hold: dlockHold(open)},
		{id: "dlock-shared", backend: "postgres", name: "dlock, one Client", setting: "defaults", role: roleDlock, hotKey: true,
			contenders: sharedDlockContenders(open)},
		{id: "sqltable", backend: "postgres", name: "SQL lock table", setting: "hand-written, polls every 100 ms", role: rolePeer, uncontended: true, hotKey: true,
			contenders: p.tableContenders(true), hold: p.tableHold},
		{id: "floor", backend: "postgres", name: "raw floor", setting: "the same INSERT … ON CONFLICT + DELETE, no polling", role: roleFloor, uncontended: true,
			contenders: p.tableContenders(false)},
	}
	b.family = &family{open: open, slots: p.tableSlots, slotsName: "SQL lock table"}
	return b, nil
}

// tableSlots are the hand-written semaphore's slots as rows of the SQL
// lock table, one pool per contender: a try is the table's INSERT … ON
// CONFLICT, the release its DELETE.
func (p *pgServer) tableSlots(ctx context.Context, key string, limit, n int) ([]tryFunc, func(), error) {
	return openN(n, func(int) (tryFunc, func(), error) {
		pool, err := p.pool(ctx)
		if err != nil {
			return nil, nil, err
		}
		try := func(ctx context.Context, i int) (func(context.Context) error, bool, error) {
			name, owner := fmt.Sprintf("%s/%d", key, i), newOwner()
			tag, err := pool.Exec(ctx, sqlAcquire, name, owner, lockTTL.Milliseconds())
			if err != nil || tag.RowsAffected() != 1 {
				return nil, false, err
			}
			return func(ctx context.Context) error { return tableRelease(ctx, pool, name, owner) }, true, nil
		}
		return try, pool.Close, nil
	})
}

func newOwner() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// tableContenders: each contender its own pool. With poll, a held key is
// tried again every pollInterval; without, a held key is an error (the
// floor is only run uncontended).
func (p *pgServer) tableContenders(poll bool) func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
	return func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
		return openN(n, func(int) (lockFunc, func(), error) {
			pool, err := p.pool(ctx)
			if err != nil {
				return nil, nil, err
			}
			lock := func(ctx context.Context) (func(context.Context) error, error) {
				owner := newOwner()
				for {
					tag, err := pool.Exec(ctx, sqlAcquire, key, owner, lockTTL.Milliseconds())
					if err != nil {
						return nil, err
					}
					if tag.RowsAffected() == 1 {
						return func(ctx context.Context) error { return tableRelease(ctx, pool, key, owner) }, nil
					}
					if !poll {
						return nil, errors.New("sql floor: key held")
					}
					select {
					case <-ctx.Done():
						return nil, ctx.Err()
					case <-time.After(pollInterval):
					}
				}
			}
			return lock, pool.Close, nil
		})
	}
}

func tableRelease(ctx context.Context, pool *pgxpool.Pool, key, owner string) error {
	tag, err := pool.Exec(ctx, sqlRelease, key, owner)
	if err == nil && tag.RowsAffected() != 1 {
		err = errors.New("sql lock: release: not held")
	}
	return err
}

// tableHold takes every key on one pool and refreshes each from its own
// goroutine every TTL/3.
func (p *pgServer) tableHold(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error) {
	pool, err := p.pool(ctx)
	if err != nil {
		return nil, err
	}
	owner := newOwner()
	h := newLoopHeld(func(context.Context) error { pool.Close(); return nil })
	taken := make([]bool, len(keys))
	err = parallel(len(keys), holdWorkers, func(i int) error {
		tag, err := pool.Exec(ctx, sqlAcquire, keys[i], owner, ttl.Milliseconds())
		if err == nil && tag.RowsAffected() != 1 {
			err = errors.New("sql lock: key held")
		}
		taken[i] = err == nil
		return err
	})
	for i, key := range keys {
		if !taken[i] {
			continue
		}
		h.add(ttl,
			func(ctx context.Context) error {
				tag, err := pool.Exec(ctx, sqlRefresh, key, owner, ttl.Milliseconds())
				if err == nil && tag.RowsAffected() != 1 {
					err = errors.New("sql lock: refresh: not held")
				}
				return err
			},
			func(ctx context.Context) error { return tableRelease(ctx, pool, key, owner) })
	}
	if err != nil {
		_ = h.release(ctx)
		return nil, err
	}
	return h, nil
}
