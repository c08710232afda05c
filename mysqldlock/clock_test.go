package mysqldlock

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/sqllease/sqlleasetest"
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

// TestServerClock: leases follow the server's clock only (see
// sqlleasetest.RunClockTest), with the server and the two clients in time
// zones a day apart.
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
		c, err := NewClient(ctx, db, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	root, err := srv.RootDB()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	sqlleasetest.RunClockTest(t, ctx, sqlleasetest.Clock{
		West: client("-12:00"),
		East: client("+05:30"),
		ServerLeft: func(ctx context.Context, key string) (time.Duration, error) {
			var us int64
			err := root.QueryRowContext(ctx, "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at) FROM dlock.dlock_locks WHERE `key` = ?", key).Scan(&us)
			return time.Duration(us) * time.Microsecond, err
		},
		Args: func() []any {
			log.mu.Lock()
			defer log.mu.Unlock()
			return append([]any(nil), log.args...)
		},
	})
}
