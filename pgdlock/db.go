package pgdlock

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/dlock-go/dlock/internal/sqllease"
)

// querier runs the driver's statements on a pgx pool or a database/sql
// handle, whichever the application gave.
type querier interface {
	// queryRow runs query and scans its first row into dest; found is
	// false when there is no row.
	queryRow(ctx context.Context, query string, args []any, dest ...any) (found bool, err error)
	// exec runs query and returns the number of rows it changed.
	exec(ctx context.Context, query string, args ...any) (int64, error)
	// query runs query and calls each with a scan function for every row
	// it returns, stopping at the first error.
	query(ctx context.Context, query string, args []any, each func(scan func(dest ...any) error) error) error
	// lockedQueryRow is queryRow of query preceded by lock, a statement
	// that takes row locks, run with the first lockArgs of args: both in
	// one round trip and one transaction (a pgx batch), so that query's
	// snapshot is taken once the locks are held and sees every change
	// committed before. Without pgx underneath it is queryRow alone.
	lockedQueryRow(ctx context.Context, lock string, lockArgs int, query string, args []any, dest ...any) (found bool, err error)
	// canListen reports whether listen can give a pgx connection.
	canListen() bool
	// listen runs fn on a connection of its own, outside the statement
	// pool, and closes (discards) that connection when fn returns.
	// Connecting may take up to timeout.
	listen(ctx context.Context, timeout time.Duration, fn func(*pgx.Conn) error) error
}

// errNoListen reports a database/sql handle whose driver is not pgx: LISTEN
// needs a dedicated pgx connection, so waiters poll.
var errNoListen = errors.New("pgdlock: release notifications need a pgx connection (database/sql driver is not pgx)")

type poolQuerier struct{ pool *pgxpool.Pool }

func (q poolQuerier) queryRow(ctx context.Context, query string, args []any, dest ...any) (bool, error) {
	return sqllease.Found(q.pool.QueryRow(ctx, query, args...).Scan(dest...), pgx.ErrNoRows)
}

func (q poolQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.pool.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q poolQuerier) query(ctx context.Context, query string, args []any, each func(scan func(dest ...any) error) error) error {
	rows, err := q.pool.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return sqllease.ScanRows(rows, each)
}

func (q poolQuerier) lockedQueryRow(ctx context.Context, lock string, lockArgs int, query string, args []any, dest ...any) (bool, error) {
	return batchRow(ctx, q.pool, lock, lockArgs, query, args, dest)
}

// batchSender is what batchRow sends its batch on: a pool or a connection.
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// batchRow is lockedQueryRow over a pgx batch: its statements run in one
// implicit transaction.
func batchRow(ctx context.Context, on batchSender, lock string, lockArgs int, query string, args []any, dest []any) (bool, error) {
	var b pgx.Batch
	b.Queue(lock, args[:lockArgs]...)
	b.Queue(query, args...)
	br := on.SendBatch(ctx, &b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return false, err
	}
	found, err := sqllease.Found(br.QueryRow().Scan(dest...), pgx.ErrNoRows)
	if cerr := br.Close(); err == nil && cerr != nil {
		return false, cerr
	}
	return found, err
}

func (q poolQuerier) canListen() bool { return true }

func (q poolQuerier) listen(ctx context.Context, timeout time.Duration, fn func(*pgx.Conn) error) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	conn, err := pgx.ConnectConfig(cctx, q.pool.Config().ConnConfig)
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	return fn(conn)
}

type dbQuerier struct{ db *sql.DB }

func (q dbQuerier) queryRow(ctx context.Context, query string, args []any, dest ...any) (bool, error) {
	return sqllease.Found(q.db.QueryRowContext(ctx, query, args...).Scan(dest...), sql.ErrNoRows)
}

func (q dbQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q dbQuerier) query(ctx context.Context, query string, args []any, each func(scan func(dest ...any) error) error) error {
	rows, err := q.db.QueryContext(ctx, query, args...)
	return sqllease.QueryRows(rows, err, each)
}

func (q dbQuerier) lockedQueryRow(ctx context.Context, lock string, lockArgs int, query string, args []any, dest ...any) (bool, error) {
	if !q.canListen() {
		return q.queryRow(ctx, query, args, dest...)
	}
	conn, err := q.db.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	var found bool
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			found, err = q.queryRow(ctx, query, args, dest...)
			return err
		}
		found, err = batchRow(ctx, sc.Conn(), lock, lockArgs, query, args, dest)
		return err
	})
	return found, err
}

func (q dbQuerier) canListen() bool {
	_, ok := q.db.Driver().(*stdlib.Driver)
	return ok
}

func (q dbQuerier) listen(ctx context.Context, timeout time.Duration, fn func(*pgx.Conn) error) error {
	if !q.canListen() {
		return errNoListen
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	conn, err := q.db.Conn(cctx)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return errNoListen
		}
		// The connection has LISTENed: never hand it back to the pool.
		if err := fn(sc.Conn()); err != nil {
			return fmt.Errorf("%w (%w)", err, sqldriver.ErrBadConn)
		}
		return sqldriver.ErrBadConn
	})
}

// runner is what a transaction's statements run on: querier's statement
// methods.
type runner interface {
	queryRow(ctx context.Context, query string, args []any, dest ...any) (found bool, err error)
	exec(ctx context.Context, query string, args ...any) (int64, error)
	query(ctx context.Context, query string, args []any, each func(scan func(dest ...any) error) error) error
}

// inTx runs fn in a transaction (READ COMMITTED) of the pool or handle and
// commits it; an error of fn rolls it back.
func inTx(ctx context.Context, q querier, fn func(r runner) error) error {
	switch q := q.(type) {
	case poolQuerier:
		tx, err := q.pool.Begin(ctx)
		if err != nil {
			return err
		}
		if err := fn(pgxTx{tx}); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return err
		}
		return tx.Commit(ctx)
	case dbQuerier:
		tx, err := q.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := fn(sqlTx{tx}); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	return fmt.Errorf("pgdlock: no transactions on %T", q)
}

type pgxTx struct{ tx pgx.Tx }

func (t pgxTx) queryRow(ctx context.Context, query string, args []any, dest ...any) (bool, error) {
	return sqllease.Found(t.tx.QueryRow(ctx, query, args...).Scan(dest...), pgx.ErrNoRows)
}

func (t pgxTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (t pgxTx) query(ctx context.Context, query string, args []any, each func(scan func(dest ...any) error) error) error {
	rows, err := t.tx.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	return sqllease.ScanRows(rows, each)
}

type sqlTx struct{ tx *sql.Tx }

func (t sqlTx) queryRow(ctx context.Context, query string, args []any, dest ...any) (bool, error) {
	return sqllease.Found(t.tx.QueryRowContext(ctx, query, args...).Scan(dest...), sql.ErrNoRows)
}

func (t sqlTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t sqlTx) query(ctx context.Context, query string, args []any, each func(scan func(dest ...any) error) error) error {
	rows, err := t.tx.QueryContext(ctx, query, args...)
	return sqllease.QueryRows(rows, err, each)
}
