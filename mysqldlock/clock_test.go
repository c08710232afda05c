package mysqldlock

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// argLog keeps the arguments of every statement sent through a recorder.
type argLog struct {
	mu   sync.Mutex
	args []any
}

func (l *argLog) keep(args []sqldriver.NamedValue) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range args {
		l.args = append(l.args, a.Value)
	}
}

// recorder wraps the real connector and logs statement arguments.
type recorder struct {
	sqldriver.Connector
	log *argLog
}

func (r recorder) Connect(ctx context.Context) (sqldriver.Conn, error) {
	c, err := r.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return recConn{Conn: c, log: r.log}, nil
}

type recConn struct {
	sqldriver.Conn
	log *argLog
}

func (c recConn) ExecContext(ctx context.Context, q string, args []sqldriver.NamedValue) (sqldriver.Result, error) {
	c.log.keep(args)
	return c.Conn.(sqldriver.ExecerContext).ExecContext(ctx, q, args)
}

func (c recConn) QueryContext(ctx context.Context, q string, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	c.log.keep(args)
	return c.Conn.(sqldriver.QueryerContext).QueryContext(ctx, q, args)
}

// TestServerClock shows that leases follow the server's clock only: the
// server and the two clients run in time zones a day apart, the lease the
// server keeps is the TTL from its own now, and the client never sends a
// time, only TTLs.
func TestServerClock(t *testing.T) {
	srv := testserver.StartMariaDB(t, testserver.MariaDBArg("--default-time-zone=+13:00"))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	log := &argLog{}
	client := func(tz string) *dlock.Client {
		cfg := srv.Config()
		cfg.Params = map[string]string{"time_zone": "'" + tz + "'"}
		cfg.InterpolateParams = true // every statement goes through ExecContext/QueryContext
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			t.Fatal(err)
		}
		db := sql.OpenDB(recorder{Connector: conn, log: log})
		t.Cleanup(func() { db.Close() })
		c, err := NewClient(ctx, db, Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	west, east := client("-12:00"), client("+05:30")
	root, err := srv.RootDB()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	const ttl = 10 * time.Second
	l, err := west.TryLock(ctx, "clock", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	// The server's own view of the lease.
	var us int64
	err = root.QueryRowContext(ctx, "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) FROM dlock.dlock_locks WHERE `key` = 'clock'").Scan(&us)
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Duration(us) * time.Microsecond; left <= ttl-2*time.Second || left > ttl {
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

	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.args) == 0 {
		t.Fatal("recorder saw no arguments")
	}
	for _, a := range log.args {
		switch a.(type) {
		case []byte, string, int64, nil:
		default:
			t.Errorf("driver sent an argument of type %T (%v); want only keys, tokens, metadata, names and TTLs", a, a)
		}
		if _, ok := a.(time.Time); ok {
			t.Errorf("driver sent a client timestamp: %v", a)
		}
	}
}
