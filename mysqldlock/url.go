package mysqldlock

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// Scheme is the URL scheme this package registers with dlock.Open.
const Scheme = "mysql"

// DefaultPort is the server port used when the URL names none.
const DefaultPort = "3306"

// Connection pool settings of a driver opened from a URL.
const (
	maxOpenConns    = 16
	connMaxLifetime = 5 * time.Minute
)

func init() {
	dlock.Register(Scheme, driver.URLOpenerFunc(openURL))
}

const urlForm = "mysql://[user[:password]@]host[:port]/database[?params]"

// openURL opens a connection pool from mysql://user:pass@host:port/db.
func openURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	if err := u.RequireHost(urlForm); err != nil {
		return nil, err
	}
	cfg := Config{
		Table:           u.String("table", DefaultTable),
		SkipCreateTable: !u.Bool("create_table", true),
	}
	if cfg.Table == "" {
		u.Fail(fmt.Errorf("%w: parameter \"table\" is empty", driver.ErrInvalidOption))
	}
	tlsMode := u.String("tls", "false")
	switch tlsMode {
	case "true", "false", "skip-verify", "preferred":
	default:
		u.Fail(fmt.Errorf("%w: parameter \"tls\": %q is not one of true, false, skip-verify, preferred", driver.ErrInvalidOption, tlsMode))
	}
	timeout := u.Duration("timeout", 10*time.Second)
	if timeout < 0 {
		u.Fail(fmt.Errorf("%w: parameter \"timeout\" is negative", driver.ErrInvalidOption))
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	db := strings.TrimPrefix(u.Path, "/")
	if db == "" || strings.Contains(db, "/") {
		return nil, fmt.Errorf("%w: mysql URL must name one database: %s", driver.ErrInvalidOption, urlForm)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = DefaultPort
	}
	mc := mysql.NewConfig()
	mc.Net, mc.Addr = "tcp", net.JoinHostPort(host, port)
	mc.DBName = db
	if u.User != nil {
		mc.User = u.User.Username()
		mc.Passwd, _ = u.User.Password()
	}
	mc.TLSConfig = tlsMode
	mc.Timeout = timeout
	// One round trip per statement: placeholders are filled in by the
	// client (with escaping) instead of a prepare and an execute.
	mc.InterpolateParams = true
	// The pool retries around dead connections itself; its notes on them
	// would go to the process's stderr.
	mc.Logger = log.New(io.Discard, "", 0)
	conn, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, fmt.Errorf("%w: mysql URL %s: %s", driver.ErrInvalidOption, u.Redacted(), sqllease.Redact(err.Error(), mc.Passwd))
	}
	pool := sql.OpenDB(conn)
	pool.SetMaxOpenConns(maxOpenConns)
	pool.SetMaxIdleConns(maxOpenConns)
	pool.SetConnMaxLifetime(connMaxLifetime)
	d, err := open(ctx, pool, cfg, mc.Addr, mc.Passwd, pool.Close)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}
