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
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// terminateOthers ends every backend but the caller's, as an operator or a
// failover would.
func terminateOthers(t testing.TB, ctx context.Context, admin *pgx.Conn) int {
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

// faultHarness is a harness over a server of its own that the fault
// scenarios may kill, restart and cut off behind a proxy.
type faultHarness struct {
	harness
	pg *testserver.Postgres
	testserver.ProxyFaults
}

func (h *faultHarness) Addr() string       { return h.pg.Addr() }
func (h *faultHarness) Kill(testing.TB)    { h.pg.Kill() }
func (h *faultHarness) Restart(testing.TB) { h.pg.Restart() }

func (h *faultHarness) KillConnections(t testing.TB) int {
	admin, err := pgx.Connect(t.Context(), h.pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	return terminateOthers(t, t.Context(), admin)
}

func (h *faultHarness) MakeProxiedDriver(ctx context.Context) (driver.Locker, error) {
	return (&harness{url: strings.Replace(h.url, h.pg.Addr(), h.Proxies[0].Addr(), 1)}).MakeDriver(ctx)
}

func (h *faultHarness) URL() string { return h.url }

func TestFaults(t *testing.T) {
	pg := testserver.StartPostgres(t)
	proxy := testserver.StartProxy(t, pg.Addr())
	drivertest.RunFaultTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &faultHarness{harness: harness{url: pg.URL()}, pg: pg, ProxyFaults: testserver.ProxyFaultsOf(proxy)}, nil
	})
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
	dl, err := NewDriver(ctx, pool, Options{})
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
	for i := 0; ; i++ { // the pool may first meet a terminated connection
		err := l.Unlock(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, dlock.ErrUnavailable) || i == 50 {
			t.Fatalf("Unlock: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
	dl, err := OpenURL(ctx, u)
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
