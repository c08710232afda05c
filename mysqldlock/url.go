package mysqldlock

import (
	"context"
	"crypto/tls"
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
	dlock.Register(Scheme, &URLOpener{})
}

const urlForm = "mysql://[user[:password]@]host[:port]/database[?params] or mysql://user@/database?socket=/path/to/mysqld.sock"

// refused are go-sql-driver/mysql DSN parameters a URL may not carry: they
// change how results are read or what a statement may do, which the
// driver's statements depend on (NewClient accepts any *sql.DB).
var refused = []string{
	"allowAllFiles", "allowOldPasswords", "charset", "clientFoundRows", "collation",
	"columnsWithAlias", "interpolateParams", "loc", "multiStatements", "parseTime",
	"serverPubKey", "strict", "timeTruncate",
}

// OpenURL opens a driver for a mysql:// URL (see the package documentation
// for its forms and parameters) with the default settings:
// (&URLOpener{}).OpenLockerURL(ctx, u).
func OpenURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	return (&URLOpener{}).OpenLockerURL(ctx, u)
}

// URLOpener opens mysql:// URLs (see the package documentation for their
// forms and parameters) with settings given in code. The zero value uses
// the defaults; init registers one for the mysql scheme with
// dlock.Register.
type URLOpener struct {
	// Options are the driver's settings where the URL does not give them:
	// a query parameter, when present, wins over the field it names (table
	// over Table, create_table over SkipCreateTable); a field no parameter
	// names applies as it is.
	Options Options
	// TLSConfig, when not nil, is the TLS configuration of every TCP
	// connection, whatever the URL's tls parameter says (go-sql-driver's
	// mysql.Config.TLS). Nil: the tls parameter decides. A Unix socket
	// refuses it.
	TLSConfig *tls.Config
	// ConfigureMySQL, when not nil, is called with the go-sql-driver
	// configuration made from the URL (TLSConfig already applied) before
	// the pool is made, to set what a URL cannot (a dialer, a logger,
	// connection attributes). What it sets wins over the URL, but the
	// driver's statements need interpolateParams on and multiStatements,
	// clientFoundRows and parseTime off: a hook that changes them breaks
	// the driver.
	ConfigureMySQL func(*mysql.Config)
}

var _ driver.URLOpener = (*URLOpener)(nil)

// OpenLockerURL implements driver.URLOpener: it opens a connection pool
// from mysql://user:pass@host:port/db (or a socket form) and returns the
// driver, which owns the pool and closes it on Close. Errors never include
// the password; an invalid URL or setting gives an error matching
// dlock.ErrInvalidOption, a server that cannot be reached one matching
// dlock.ErrUnavailable.
func (o *URLOpener) OpenLockerURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	if err := u.RequireHost(urlForm); err != nil && !u.Has("socket") {
		return nil, err
	} else if err := u.CheckForm(urlForm); err != nil {
		return nil, err
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: mysql URL takes no #fragment (write '#' in a password as %%23)", driver.ErrInvalidOption)
	}
	cfg := o.Options
	cfg.Table, cfg.SkipCreateTable = sqllease.TableParams(u, cfg.Table, cfg.SkipCreateTable)
	for _, name := range refused {
		if u.Has(name) {
			u.String(name, "")
			u.Fail(fmt.Errorf("%w: parameter %q is not accepted in a mysql URL: it changes how the driver's statements behave (use NewClient with a *sql.DB of your own settings)", driver.ErrInvalidOption, name))
		}
	}
	mc := mysql.NewConfig()
	tlsMode := u.String("tls", "false")
	switch tlsMode {
	case "true", "false", "skip-verify", "preferred":
	default:
		u.Fail(fmt.Errorf("%w: parameter \"tls\": %q is not one of true, false, skip-verify, preferred", driver.ErrInvalidOption, tlsMode))
	}
	mc.Timeout = nonNegative(u, "timeout", 10*time.Second)
	mc.ReadTimeout = nonNegative(u, "readTimeout", 0)
	mc.WriteTimeout = nonNegative(u, "writeTimeout", 0)
	mc.AllowCleartextPasswords = u.Bool("allowCleartextPasswords", mc.AllowCleartextPasswords)
	mc.AllowFallbackToPlaintext = u.Bool("allowFallbackToPlaintext", mc.AllowFallbackToPlaintext)
	mc.AllowNativePasswords = u.Bool("allowNativePasswords", mc.AllowNativePasswords)
	mc.CheckConnLiveness = u.Bool("checkConnLiveness", mc.CheckConnLiveness)
	mc.RejectReadOnly = u.Bool("rejectReadOnly", mc.RejectReadOnly)
	mc.ConnectionAttributes = u.String("connectionAttributes", "")
	if u.Has("maxAllowedPacket") {
		mc.MaxAllowedPacket = u.Int("maxAllowedPacket", mc.MaxAllowedPacket)
		if mc.MaxAllowedPacket < 0 {
			u.Fail(fmt.Errorf("%w: parameter \"maxAllowedPacket\" is negative", driver.ErrInvalidOption))
		}
	}
	if u.Bool("compress", false) {
		if err := mc.Apply(mysql.EnableCompression(true)); err != nil {
			u.Fail(fmt.Errorf("%w: parameter \"compress\": %v", driver.ErrInvalidOption, err))
		}
	}
	socket := u.String("socket", "")
	if err := u.Finish(); err != nil {
		return nil, err
	}
	host, db := u.Host, strings.TrimPrefix(u.Path, "/")
	if host == "unix(" {
		// go-sql-driver's DSN form, user@unix(/path/to/socket)/database,
		// written as a URL: the socket path is read as the URL's path.
		i := strings.Index(u.Path, ")/")
		if i < 0 {
			return nil, fmt.Errorf("%w: mysql URL: unix( without )/database: use %s", driver.ErrInvalidOption, urlForm)
		}
		host, socket, db = "", u.Path[:i], u.Path[i+2:]
	}
	if db == "" || strings.Contains(db, "/") {
		return nil, fmt.Errorf("%w: mysql URL must name one database: %s", driver.ErrInvalidOption, urlForm)
	}
	switch {
	case socket != "" && host != "":
		return nil, fmt.Errorf("%w: mysql URL names both a host and a socket", driver.ErrInvalidOption)
	case strings.HasPrefix(host, "/"):
		// A percent-encoded socket path as the host.
		socket = host
	}
	if socket != "" {
		if !strings.HasPrefix(socket, "/") {
			return nil, fmt.Errorf("%w: mysql URL: the socket must be an absolute path", driver.ErrInvalidOption)
		}
		mc.Net, mc.Addr = "unix", socket
		if tlsMode != "false" || o.TLSConfig != nil {
			return nil, fmt.Errorf("%w: mysql URL: tls has no meaning over a Unix socket", driver.ErrInvalidOption)
		}
	} else {
		h, port := u.Hostname(), u.Port()
		if port == "" {
			port = DefaultPort
		}
		if h == "" || strings.ContainsAny(h, "/()") {
			return nil, fmt.Errorf("%w: mysql URL: the host is not valid: use %s", driver.ErrInvalidOption, urlForm)
		}
		mc.Net, mc.Addr = "tcp", net.JoinHostPort(h, port)
	}
	mc.DBName = db
	if u.User != nil {
		mc.User = u.User.Username()
		mc.Passwd, _ = u.User.Password()
	}
	mc.TLSConfig = tlsMode
	// One round trip per statement: placeholders are filled in by the
	// client (with escaping) instead of a prepare and an execute.
	mc.InterpolateParams = true
	// The pool retries around dead connections itself; its notes on them
	// would go to the process's stderr.
	mc.Logger = log.New(io.Discard, "", 0)
	if o.TLSConfig != nil {
		mc.TLS = o.TLSConfig.Clone()
	}
	if o.ConfigureMySQL != nil {
		o.ConfigureMySQL(mc)
	}
	conn, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, fmt.Errorf("%w: mysql URL: %s", driver.ErrInvalidOption, sqllease.Redact(err.Error(), mc.Passwd))
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

func nonNegative(u *driver.URL, name string, def time.Duration) time.Duration {
	d := u.Duration(name, def)
	if d < 0 {
		u.Fail(fmt.Errorf("%w: parameter %q is negative", driver.ErrInvalidOption, name))
		return def
	}
	return d
}
