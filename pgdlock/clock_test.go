package pgdlock

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/sqllease/sqlleasetest"
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

// TestServerClock: leases follow the server's clock only (see
// sqlleasetest.RunClockTest), with the server and the two clients in time
// zones 26 hours apart.
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
		c, err := NewClient(ctx, pool, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	admin, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	sqlleasetest.RunClockTest(t, ctx, sqlleasetest.Clock{
		West: client("Etc/GMT+12"),
		East: client("Pacific/Kiritimati"),
		ServerLeft: func(ctx context.Context, key string) (left time.Duration, err error) {
			err = admin.QueryRow(ctx, `SELECT expires_at - clock_timestamp() FROM dlock_locks WHERE "key" = $1`, []byte(key)).Scan(&left)
			return left, err
		},
		Args: func() []any {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return append([]any(nil), rec.args...)
		},
	})
}
