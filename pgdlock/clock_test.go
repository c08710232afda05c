package pgdlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// argRecorder is a pgx tracer that keeps the arguments of every statement.
type argRecorder struct {
	mu   sync.Mutex
	args []any
}

func (r *argRecorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	r.args = append(r.args, data.Args...)
	r.mu.Unlock()
	return ctx
}

func (r *argRecorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestServerClock shows that leases follow the server's clock only: the
// server and the two clients run in time zones 26 hours apart, the lease
// the server keeps is the TTL from its own now, and the client never sends
// a time, only TTLs.
func TestServerClock(t *testing.T) {
	pg := testserver.StartPostgres(t, testserver.PostgresSetting("TimeZone=Pacific/Kiritimati"))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	rec := &argRecorder{}
	client := func(tz string) *dlock.Client {
		cfg, err := pgxpool.ParseConfig(pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig.RuntimeParams["TimeZone"] = tz
		cfg.ConnConfig.Tracer = rec
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		c, err := NewClient(ctx, pool, Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	west, east := client("Etc/GMT+12"), client("Pacific/Kiritimati")
	admin, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())

	const ttl = 10 * time.Second
	l, err := west.TryLock(ctx, "clock", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	// The server's own view of the lease: expires_at - now().
	var left time.Duration
	err = admin.QueryRow(ctx, `SELECT expires_at - clock_timestamp() FROM dlock_locks WHERE "key" = $1`, []byte("clock")).Scan(&left)
	if err != nil {
		t.Fatal(err)
	}
	if left <= ttl-2*time.Second || left > ttl {
		t.Errorf("server-side lease = %v, want just under %v", left, ttl)
	}
	in, err := east.Inspect(ctx, "clock")
	if err != nil || !in.Held || in.TTL <= ttl-2*time.Second || in.TTL > ttl {
		t.Errorf("Inspect from another time zone = %+v, %v; want held with TTL just under %v", in, err, ttl)
	}
	if _, err := east.TryLock(ctx, "clock"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("TryLock from another time zone = %v, want ErrNotAcquired", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// A short lease lapses on time whatever the zones.
	if _, err := west.TryLock(ctx, "clock-short", dlock.WithTTL(300*time.Millisecond), dlock.WithAutoRefresh(false)); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	l2, err := east.Lock(wctx, "clock-short", dlock.WithRetry(dlock.LinearBackoff(50*time.Millisecond)))
	if err != nil {
		t.Fatalf("takeover after a 300ms lease across time zones: %v", err)
	}
	if err := l2.Refresh(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.args) == 0 {
		t.Fatal("tracer saw no arguments")
	}
	for _, a := range rec.args {
		switch a.(type) {
		case []byte, string, int64:
		default:
			t.Errorf("driver sent an argument of type %T (%v); want only keys, tokens, text and TTLs", a, a)
		}
		if _, ok := a.(time.Time); ok {
			t.Errorf("driver sent a client timestamp: %v", a)
		}
	}
}
