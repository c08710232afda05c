package mysqldlock

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// eventually retries op (at most 50 times, 100 ms apart) while it fails
// with an error matching ErrUnavailable: the first statements after a
// server restart may meet connections the pool has not yet found dead.
func eventually(t *testing.T, what string, op func() error) {
	t.Helper()
	var err error
	for range 50 {
		if err = op(); err == nil {
			return
		}
		if !errors.Is(err, dlock.ErrUnavailable) {
			t.Fatalf("%s: %v (want success or ErrUnavailable)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still failing: %v", what, err)
}

// killUser KILLs every connection of user, as an operator or a proxy
// failover would, and returns how many.
func killUser(t *testing.T, ctx context.Context, root *sql.DB, user string) int {
	t.Helper()
	rows, err := root.QueryContext(ctx, "SELECT id FROM information_schema.processlist WHERE user = ?", user)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if _, err := root.ExecContext(ctx, "KILL ?", id); err != nil && !strings.Contains(err.Error(), "Unknown thread") {
			t.Fatalf("KILL %d: %v", id, err)
		}
	}
	return len(ids)
}

func TestServerRestart(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	a := openClient(t, ctx, srv.URL())
	b := openClient(t, ctx, srv.URL())

	t.Run("lease lapses while down", func(t *testing.T) {
		l, err := a.TryLock(ctx, "restart-lapse", dlock.WithTTL(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		f1 := l.Fence()
		srv.Kill()
		select {
		case <-l.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("Done not closed 15s after the server went away")
		}
		if err := l.Err(); !errors.Is(err, dlock.ErrLost) {
			t.Fatalf("Err = %v, want ErrLost", err)
		}
		_, err = b.TryLock(ctx, "restart-other")
		if !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), srv.Addr()) {
			t.Fatalf("TryLock with the server down = %v, want ErrUnavailable naming %s", err, srv.Addr())
		}
		srv.Restart()
		var l2 *dlock.Lock
		eventually(t, "TryLock after restart", func() (err error) {
			l2, err = b.TryLock(ctx, "restart-lapse")
			return err
		})
		if l2.Fence() <= f1 {
			t.Errorf("fence after restart = %d, want > %d (the counter survives)", l2.Fence(), f1)
		}
		eventually(t, "Unlock", func() error { return l2.Unlock(ctx) })
	})

	t.Run("lease survives a quick restart", func(t *testing.T) {
		l, err := a.TryLock(ctx, "restart-keep", dlock.WithTTL(20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		srv.Restart()
		eventually(t, "Refresh after restart", func() error { return l.Refresh(ctx, 0) })
		if err := l.Err(); err != nil {
			t.Fatalf("Err after restart and refresh = %v, want nil", err)
		}
		var in dlock.Info
		eventually(t, "Inspect", func() (err error) { in, err = b.Inspect(ctx, "restart-keep"); return err })
		if !in.Held || in.Fence != l.Fence() {
			t.Fatalf("Inspect = %+v, want held with fence %d", in, l.Fence())
		}
		if _, err := b.TryLock(ctx, "restart-keep"); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryLock by another owner = %v, want ErrNotAcquired", err)
		}
		eventually(t, "Unlock", func() error { return l.Unlock(ctx) })
	})
}

func TestConnectionKilled(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	root, err := srv.RootDB()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	a := openClient(t, ctx, srv.URL())
	b := openClient(t, ctx, srv.URL())

	// The holder's connections are killed under it: the pool notices
	// (the driver checks a connection before reusing it) and reconnects,
	// and the lock is kept.
	const ttl = 900 * time.Millisecond
	l, err := a.TryLock(ctx, "killed", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if n := killUser(t, ctx, root, srv.User); n == 0 {
			t.Fatal("no connection killed")
		}
		time.Sleep(2 * ttl)
		if err := l.Err(); err != nil {
			t.Fatalf("lock lost after its connections were killed: %v", err)
		}
	}
	in, err := b.Inspect(ctx, "killed")
	if err != nil || !in.Held || in.Fence != l.Fence() {
		t.Fatalf("Inspect = %+v, %v; want held with fence %d", in, err, l.Fence())
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}
