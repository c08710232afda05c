package pgdlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

func openClient(t *testing.T, ctx context.Context, url string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	c, err := dlock.Open(ctx, url, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

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

// terminateOthers ends every backend but the caller's, as an operator or a
// failover would.
func terminateOthers(t *testing.T, ctx context.Context, admin *pgx.Conn) int {
	t.Helper()
	var n int
	err := admin.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE pid <> pg_backend_pid() AND backend_type = 'client backend') t`).Scan(&n)
	if err != nil {
		t.Fatalf("pg_terminate_backend: %v", err)
	}
	return n
}

func TestServerRestart(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	a := openClient(t, ctx, pg.URL())
	b := openClient(t, ctx, pg.URL())

	t.Run("lease lapses while down", func(t *testing.T) {
		l, err := a.TryLock(ctx, "restart-lapse", dlock.WithTTL(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		f1 := l.Fence()
		pg.Kill()
		select {
		case <-l.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("Done not closed 15s after the server went away")
		}
		if err := l.Err(); !errors.Is(err, dlock.ErrLost) {
			t.Fatalf("Err = %v, want ErrLost", err)
		}
		// While down: errors name the server and match ErrUnavailable.
		_, err = b.TryLock(ctx, "restart-other")
		if !errors.Is(err, dlock.ErrUnavailable) || !contains(err, pg.Addr()) {
			t.Fatalf("TryLock with the server down = %v, want ErrUnavailable naming %s", err, pg.Addr())
		}
		pg.Restart()
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
		pg.Restart()
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

func contains(err error, s string) bool {
	return err != nil && s != "" && strings.Contains(err.Error(), s)
}

func TestConnectionKilled(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	a := openClient(t, ctx, pg.URL())
	b := openClient(t, ctx, pg.URL())

	// The holder's connections are terminated under it: the pool replaces
	// them, the watchdog's next refresh (or its quick retry) succeeds on a
	// new connection, and the lock is kept.
	const ttl = 900 * time.Millisecond
	l, err := a.TryLock(ctx, "killed", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if n := terminateOthers(t, ctx, admin); n == 0 {
			t.Fatal("no backend terminated")
		}
		time.Sleep(2 * ttl)
		if err := l.Err(); err != nil {
			t.Fatalf("lock lost after its connections were terminated: %v", err)
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

func TestListenerReconnects(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	pool, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	dl, err := NewDriver(ctx, pool, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	d := dl.(*pgDriver)
	other := openClient(t, ctx, pg.URL())

	key := "listen-reconnect"
	l, err := other.TryLock(ctx, key, dlock.WithTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ch, stop, err := d.WatchReleases(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if got := d.lis.sessions.Load(); got != 1 {
		t.Fatalf("LISTEN sessions = %d, want 1", got)
	}
	drain(ch)

	terminateOthers(t, ctx, admin)
	deadline := time.Now().Add(20 * time.Second)
	for d.lis.sessions.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("listener did not reconnect within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-ch: // the wake-up after reconnecting
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after the listener reconnected")
	}
	// The release is notified on the new connection.
	eventually(t, "Unlock", func() error { return l.Unlock(ctx) })
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("release not notified after the listener reconnected")
	}
}

func TestListenerIdles(t *testing.T) {
	defer func(p, l time.Duration) { listenPoll, listenLinger = p, l }(listenPoll, listenLinger)
	listenPoll, listenLinger = 50*time.Millisecond, 100*time.Millisecond

	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	u, _ := driver.ParseURL(pg.URL())
	dl, err := openURL(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	d := dl.(*pgDriver)
	other := openClient(t, ctx, pg.URL())

	for round := 1; round <= 3; round++ {
		key := fmt.Sprintf("idle-%d", round)
		l, err := other.TryLock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		ch, stop, err := d.WatchReleases(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.lis.sessions.Load(); got != int64(round) {
			t.Fatalf("round %d: LISTEN sessions = %d, want %d (a new connection after each idle stop)", round, got, round)
		}
		drain(ch)
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: release not notified", round)
		}
		stop()
		deadline := time.Now().Add(10 * time.Second)
		for d.lis.isRunning() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: listener still running 10s after its last watcher left", round)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

var _ driver.Notifier = (*pgDriver)(nil)
