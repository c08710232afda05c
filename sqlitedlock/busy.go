package sqlitedlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/dlock-go/dlock/driver"
)

// maxBusyRetry bounds the driver's own retries of a statement that found the
// file busy, for callers whose context has no deadline.
const maxBusyRetry = 30 * time.Second

// isBusy reports whether err is SQLite saying that another connection holds
// the lock on the file (SQLITE_BUSY, in any extended form) or on a table of a
// shared in-memory database (SQLITE_LOCKED). Nothing was written: the
// statement may run again.
func isBusy(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}

// retry runs f until it returns something other than a busy error, the
// context ends or maxBusyRetry has passed, sleeping a short jittered,
// growing backoff between runs. SQLite's busy timeout has normally absorbed
// the contention already; this covers what it lets through (a busy timeout
// of zero, a connection set up by the application without one, the rare
// busy results SQLite reports without waiting) so that callers never see
// "database is locked".
func (d *sqliteDriver) retry(ctx context.Context, op string, f func() error) error {
	start := time.Now()
	wait := time.Millisecond
	var timer *time.Timer
	for {
		err := f()
		if err == nil {
			return nil
		}
		if !isBusy(err) {
			return d.wrap(ctx, op, err)
		}
		if time.Since(start) >= maxBusyRetry {
			return fmt.Errorf("%w: sqlite %s: %s: the database file stayed busy for %v (another process keeps it locked)", driver.ErrUnavailable, d.name, op, maxBusyRetry)
		}
		sleep := wait/2 + rand.N(wait/2+1)
		wait = min(2*wait, 50*time.Millisecond)
		if timer == nil {
			timer = time.NewTimer(sleep)
			defer timer.Stop()
		} else {
			timer.Reset(sleep)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sqlite %s: %s: the database file was busy (another process is writing it) until the context ended: %w", d.name, op, ctx.Err())
		case <-timer.C:
		}
	}
}

// wrap turns a database error into the driver's error: the context's error
// when the context ended, ErrClosed after Close, otherwise ErrUnavailable
// naming the file. A busy error never passes through unwrapped.
func (d *sqliteDriver) wrap(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("sqlite %s: %s: %w", d.name, op, cerr)
	}
	if d.Closed() {
		return driver.ErrClosed
	}
	if isBusy(err) {
		return fmt.Errorf("%w: sqlite %s: %s: the database file is busy (another process is writing it)", driver.ErrUnavailable, d.name, op)
	}
	hint := ""
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_CANTOPEN:
			hint = " (cannot open or create the database file: check that it and its directory exist and are writable)"
		case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM:
			hint = " (every process that locks needs write access to the database file and its directory)"
		}
	}
	return fmt.Errorf("%w: sqlite %s: %s: %v%s", driver.ErrUnavailable, d.name, op, err, hint)
}
