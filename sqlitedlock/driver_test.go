package sqlitedlock_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/sqlitedlock"
)

func openClient(t *testing.T, url string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	c, err := dlock.Open(testCtx(t), url, opts...)
	if err != nil {
		t.Fatalf("Open(%q): %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestFenceSurvivesRelease checks that a key's fence keeps increasing across
// release, across clients and across closing every client of the file.
func TestFenceSurvivesRelease(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "locks.db")
	var last uint64
	for round := range 3 {
		a := openClient(t, "sqlite://"+path)
		b := openClient(t, "sqlite://"+path)
		for _, c := range []*dlock.Client{a, b, a} {
			l, err := c.TryLock(ctx, "k", dlock.WithMetadata("round"))
			if err != nil {
				t.Fatalf("round %d: TryLock: %v", round, err)
			}
			if l.Fence() <= last {
				t.Fatalf("round %d: fence %d, want more than %d", round, l.Fence(), last)
			}
			last = l.Fence()
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			in, err := c.Inspect(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if in.Held || in.Fence != last || in.TTL != 0 || in.Metadata != "" {
				t.Fatalf("Inspect after release = %+v, want free with fence %d", in, last)
			}
		}
		a.Close()
		b.Close()
	}
	if last != 9 {
		t.Errorf("last fence = %d, want 9", last)
	}
}

// TestInspectHeld checks what Inspect reports for a held key and for a key
// never locked.
func TestInspectHeld(t *testing.T) {
	ctx := testCtx(t)
	c := openClient(t, "sqlite://"+filepath.Join(t.TempDir(), "locks.db"))
	in, err := c.Inspect(ctx, "never")
	if err != nil {
		t.Fatal(err)
	}
	if in.Held || in.Fence != 0 || in.Waiters != -1 {
		t.Fatalf("Inspect of an unknown key = %+v, want free, fence 0, waiters -1", in)
	}
	l, err := c.TryLock(ctx, "k", dlock.WithTTL(time.Minute), dlock.WithMetadata("host=a pid=1"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	in, err = c.Inspect(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !in.Held || in.Fence != l.Fence() || in.Metadata != "host=a pid=1" || in.TTL <= 50*time.Second || in.TTL > time.Minute {
		t.Fatalf("Inspect = %+v, want held, fence %d, metadata \"host=a pid=1\", TTL in (50s, 1m]", in, l.Fence())
	}
}

// TestSameProcessNotification checks that a release by one client wakes a
// waiter of another client on the same file at once, not at its backoff:
// the waiter's backoff is an hour.
func TestSameProcessNotification(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "locks.db")
	a := openClient(t, "sqlite://"+path)
	b := openClient(t, "sqlite:"+path) // another URL form, the same file
	other := openClient(t, "sqlite://"+path+"?table=other_locks")
	la, err := a.TryLock(ctx, "k", dlock.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	lo, err := other.TryLock(ctx, "k", dlock.WithTTL(time.Hour))
	if err != nil {
		t.Fatalf("the same key in another table: %v", err)
	}
	defer lo.Unlock(ctx)
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		l, err := b.Lock(wctx, "k", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the waiter subscribe
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v (want it woken by the release)", err)
	}
}

// TestBusyFile holds the database file's write lock from another
// connection, as another process would, and checks that the driver neither
// fails at once nor shows "database is locked": it waits, within the
// caller's context, and succeeds once the file is free.
func TestBusyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locks.db")
	for _, busyTimeout := range []string{"0", "30s"} {
		t.Run("busy_timeout="+busyTimeout, func(t *testing.T) {
			ctx := testCtx(t)
			c := openClient(t, "sqlite://"+path+"?busy_timeout="+busyTimeout)
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

			// The caller's deadline ends first: the error says so, without
			// SQLite's words, and comes at the deadline, not after
			// SQLite's busy timeout.
			start := time.Now()
			sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_, err = c.TryLock(sctx, "k")
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("TryLock on a busy file = %v, want DeadlineExceeded", err)
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("TryLock returned after %v, want it bounded by its 200ms context", el)
			}
			checkNoBusyText(t, err)

			// The file frees up while the caller waits: success.
			go func() {
				time.Sleep(300 * time.Millisecond)
				_, _ = conn.ExecContext(context.Background(), "COMMIT")
			}()
			l, err := c.TryLock(ctx, "k")
			if err != nil {
				checkNoBusyText(t, err)
				t.Fatalf("TryLock while the file frees up: %v", err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func checkNoBusyText(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{"database is locked", "SQLITE_BUSY", "(5)", "table is locked"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q shows SQLite's busy error %q", err, s)
		}
	}
}

// TestNewClientWithDB checks the constructor from an application's own
// *sql.DB: it shares locks with Open on the same file and leaves the DB
// open on Close.
func TestNewClientWithDB(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", sqlitedlock.DSN(path, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := sqlitedlock.NewClient(ctx, db, sqlitedlock.Options{})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	other, err := sqlitedlock.Open(ctx, path, sqlitedlock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock by a client of the same file = %v, want ErrNotAcquired", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if l.Err() == nil {
		t.Errorf("lock still held after Close")
	}
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("the application's DB after Close: %v, want it open", err)
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	if _, err := sqlitedlock.NewDriver(ctx, nil, sqlitedlock.Options{}); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("NewDriver(nil) = %v, want ErrInvalidOption", err)
	}
	if _, err := sqlitedlock.NewDriver(ctx, db, sqlitedlock.Options{Table: "no such"}); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("NewDriver with a bad table = %v, want ErrInvalidOption", err)
	}
}

// TestMemory checks named in-memory databases: clients of one name exclude
// each other, clients of another name do not.
func TestMemory(t *testing.T) {
	ctx := testCtx(t)
	a := openClient(t, "sqlite::memory:shared")
	b := openClient(t, "sqlite::memory:shared")
	c := openClient(t, "sqlite::memory:elsewhere")
	l, err := a.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("TryLock on the same named database = %v, want ErrNotAcquired", err)
	}
	lc, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Errorf("TryLock on another named database = %v, want success", err)
	} else {
		_ = lc.Unlock(ctx)
	}
	_ = l.Unlock(ctx)
}
