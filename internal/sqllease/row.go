package sqllease

import (
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// Row is a key's row in a lock table as one read saw it. The zero Row is
// a key without a row.
type Row struct {
	// Held reports a live lease: a holder's token with time left on the
	// server's clock.
	Held bool
	// Token is the holder's token, "" when the key is free (and when the
	// read does not return it).
	Token string
	// Fence is the key's grant counter.
	Fence int64
	// TTL is the lease left, zero once it has run out.
	TTL time.Duration
	// Metadata is the holder's metadata.
	Metadata string
}

// Info is the row as driver.Locker's Inspect reports it: the fence always
// (a negative one, which only a table changed by hand holds, as 0), the TTL
// and metadata only while held, and Waiters -1 (not known).
func (r Row) Info() driver.Info {
	in := driver.Info{Fence: uint64(max(r.Fence, 0)), Waiters: -1}
	if r.Held {
		in.Held, in.TTL, in.Metadata = true, r.TTL, r.Metadata
	}
	return in
}

// ForceTries bounds ForceRelease's read-then-free rounds when the key keeps
// changing hands in between.
const ForceTries = 5

// ForceRelease is driver.ForceReleaser's ForceRelease for a table without
// one statement that frees a key and returns what it freed. read reads the
// key's row; while the row is held, free frees exactly the holder read saw
// (same token, fence and metadata, lease still live), reporting false when
// the key changed hands in between, and then the row is read again, up to
// ForceTries times. ForceRelease returns the row's Info as the read saw it:
// the freed holder's, or the row's when the key was not held. Errors of
// read and free are returned as they are; a key that kept changing hands
// gives an error saying so, prefixed with where.
func ForceRelease(where, key string, read func() (Row, error), free func(Row) (bool, error)) (driver.Info, error) {
	for range ForceTries {
		r, err := read()
		if err != nil {
			return driver.Info{}, err
		}
		if !r.Held {
			return r.Info(), nil
		}
		freed, err := free(r)
		if err != nil {
			return driver.Info{}, err
		}
		if freed {
			return r.Info(), nil
		}
	}
	return driver.Info{}, fmt.Errorf("%s: force release of %q: the key changed hands %d times while being freed; try again", where, key, ForceTries)
}

// Found turns the error of a one-row query's Scan into whether the row was
// found: noRows, the handle's error for a query without rows
// (sql.ErrNoRows, pgx.ErrNoRows), means not found and no error.
func Found(err, noRows error) (bool, error) {
	if errors.Is(err, noRows) {
		return false, nil
	}
	return err == nil, err
}

// Rows is what ScanRows reads: *sql.Rows and pgx.Rows both have it.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanRows calls each with rows' Scan for every row, stopping at the first
// error, and returns that error or rows.Err(). It leaves rows open.
func ScanRows(rows Rows, each func(scan func(dest ...any) error) error) error {
	for rows.Next() {
		if err := each(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// QueryRows reads the rows of a database/sql query with ScanRows and
// closes them, returning the first error, Close's included. rows and err
// are what the query (QueryContext) returned; an err that is not nil is
// returned at once.
func QueryRows(rows *sql.Rows, err error, each func(scan func(dest ...any) error) error) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	if err := ScanRows(rows, each); err != nil {
		return err
	}
	return rows.Close()
}
