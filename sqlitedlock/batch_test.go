package sqlitedlock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/sqlitedlock"
)

// batchHarness makes drivers over one database, counting the statements
// RefreshBatch sends.
type batchHarness struct {
	open func(ctx context.Context) (driver.Locker, error)
}

func (h batchHarness) MakeDriver(ctx context.Context) (driver.Locker, error) { return h.open(ctx) }
func (h batchHarness) Close()                                                {}
func (h batchHarness) RoundTrips(d driver.Locker) int64                      { return sqlitedlock.BatchStatements(d) }
func (h batchHarness) MaxBatchRoundTrips(n int) int64 {
	return int64((n + sqlitedlock.BatchRows - 1) / sqlitedlock.BatchRows)
}
func (h batchHarness) BatchLimit() int  { return sqlitedlock.BatchRows }
func (h batchHarness) LongestTTL() bool { return true }

var batchSeq atomic.Int64

func TestBatchRefresher(t *testing.T) {
	modes := []struct {
		name string
		open func(t *testing.T) func(ctx context.Context) (driver.Locker, error)
	}{
		{"file", func(t *testing.T) func(ctx context.Context) (driver.Locker, error) {
			path := filepath.Join(t.TempDir(), "file.db")
			return func(ctx context.Context) (driver.Locker, error) {
				return sqlitedlock.OpenDriver(ctx, path, sqlitedlock.Options{})
			}
		}},
		{"memory", func(t *testing.T) func(ctx context.Context) (driver.Locker, error) {
			name := fmt.Sprint("batch-", batchSeq.Add(1))
			return func(ctx context.Context) (driver.Locker, error) {
				return sqlitedlock.OpenMemory(ctx, name, sqlitedlock.Options{})
			}
		}},
		{"application db", func(t *testing.T) func(ctx context.Context) (driver.Locker, error) {
			path := filepath.Join(t.TempDir(), "app.db")
			return func(ctx context.Context) (driver.Locker, error) {
				db, err := sql.Open("sqlite", sqlitedlock.DSN(path, 0))
				if err != nil {
					return nil, err
				}
				t.Cleanup(func() { db.Close() })
				return sqlitedlock.NewDriver(ctx, db, sqlitedlock.Options{Table: "app_locks"})
			}
		}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return batchHarness{open: m.open(t)}, nil
			})
		})
	}
}

// TestRefreshBatchFaults: a closed application database fails every
// request with the statement's ErrUnavailable; a file another connection
// holds the write lock of makes the batch wait within its context.
func TestRefreshBatchFaults(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	t.Run("database closed", func(t *testing.T) {
		db, err := sql.Open("sqlite", sqlitedlock.DSN(filepath.Join(dir, "closed.db"), 0))
		if err != nil {
			t.Fatal(err)
		}
		d, err := sqlitedlock.NewDriver(ctx, db, sqlitedlock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if res, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		db.Close()
		errs := d.(driver.BatchRefresher).RefreshBatch(ctx, []driver.RefreshRequest{
			{Key: "k", Token: "t", TTL: time.Minute}, {Key: "other", Token: "t", TTL: time.Minute},
		})
		for i, err := range errs {
			if !errors.Is(err, driver.ErrUnavailable) || err != errs[0] {
				t.Errorf("result %d = %v, want the statement's ErrUnavailable for every request", i, err)
			}
		}
	})

	// Another connection holds the file's write lock, as another process
	// would: the batch waits for it within its context, never showing
	// "database is locked".
	t.Run("busy file", func(t *testing.T) {
		path := filepath.Join(dir, "busy.db")
		d, err := sqlitedlock.OpenDriver(ctx, path, sqlitedlock.Options{BusyTimeout: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if res, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		blocker, err := sql.Open("sqlite", sqlitedlock.DSN(path, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer blocker.Close()
		conn, err := blocker.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		reqs := []driver.RefreshRequest{{Key: "k", Token: "t", TTL: time.Minute}, {Key: "other", Token: "t", TTL: time.Minute}}
		br := d.(driver.BatchRefresher)

		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		errs := br.RefreshBatch(sctx, reqs)
		cancel()
		for i, err := range errs {
			if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, driver.ErrNotHeld) {
				t.Errorf("busy file, request %d: got %v, want DeadlineExceeded", i, err)
			}
			checkNoBusyText(t, err)
		}

		go func() {
			time.Sleep(300 * time.Millisecond)
			_, _ = conn.ExecContext(context.Background(), "COMMIT")
		}()
		errs = br.RefreshBatch(ctx, reqs)
		if errs[0] != nil || !errors.Is(errs[1], driver.ErrNotHeld) {
			checkNoBusyText(t, errs[0])
			t.Errorf("results while the file frees up = %v, want [nil, ErrNotHeld]", errs)
		}
	})
}
