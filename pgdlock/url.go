package pgdlock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// The URL schemes this package registers with dlock.Open.
const (
	Scheme    = "postgres"
	SchemeAlt = "postgresql"
)

func init() {
	dlock.Register(Scheme, &URLOpener{})
	dlock.Register(SchemeAlt, &URLOpener{})
}

// passThrough lists the connection parameters a URL may carry: libpq's, as
// pgx's pgconn.ParseConfig reads them, and pgx's own pool and statement
// settings. They are handed to pgx unchanged. Every other parameter that is
// not the driver's own is an error (pgx would send it to the server as a
// run-time setting).
var passThrough = []string{
	// libpq connection parameters
	"host", "port", "dbname", "database", "user", "password", "passfile",
	"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslsni",
	"sslcertmode", "sslnegotiation", "channel_binding", "require_auth",
	"min_protocol_version", "max_protocol_version", "krbsrvname", "krbspn",
	"service", "servicefile", "connect_timeout", "application_name",
	"target_session_attrs", "options",
	// pgx
	"pool_max_conns", "pool_min_conns", "pool_min_idle_conns",
	"pool_max_conn_lifetime", "pool_max_conn_idle_time",
	"pool_max_conn_lifetime_jitter", "pool_health_check_period",
	"default_query_exec_mode", "statement_cache_capacity",
	"description_cache_capacity",
}

const urlForm = "postgres://[user[:password]@]host[:port][,...]/dbname[?params] or postgres:///dbname?host=/socket/dir"

// OpenURL opens a driver for a postgres:// or postgresql:// URL (see the
// package documentation) with the default settings:
// (&URLOpener{}).OpenLockerURL(ctx, u).
func OpenURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	return (&URLOpener{}).OpenLockerURL(ctx, u)
}

// URLOpener opens postgres:// and postgresql:// URLs (see the package
// documentation for their forms and parameters) with settings given in
// code. The zero value uses the defaults; init registers one for both
// schemes with dlock.Register.
type URLOpener struct {
	// Options are the driver's settings where the URL does not give them:
	// a query parameter, when present, wins over the field it names (table
	// over Table, create_table over SkipCreateTable, notify over
	// DisableNotify); a field no parameter names applies as it is.
	Options Options
	// TLSConfig, when not nil, is the TLS configuration of every
	// connection, whatever the URL's sslmode says (pgx's
	// ConnConfig.TLSConfig; the fallbacks sslmode=prefer or allow would try
	// are dropped). Nil: sslmode and the ssl* parameters decide.
	TLSConfig *tls.Config
	// ConfigurePool, when not nil, is called with the pool configuration
	// parsed from the URL (TLSConfig already applied) before the pool is
	// made, to set what a URL cannot (hooks, a tracer, a dialer). What it
	// sets wins over the URL.
	ConfigurePool func(*pgxpool.Config)
}

var _ driver.URLOpener = (*URLOpener)(nil)

// OpenLockerURL implements driver.URLOpener: it opens a pgx pool with the
// URL's connection settings and returns the driver, which owns the pool
// and closes it on Close. Errors never include the password; an invalid
// URL or setting gives an error matching dlock.ErrInvalidOption, a server
// that cannot be reached one matching dlock.ErrUnavailable.
func (o *URLOpener) OpenLockerURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	if err := u.CheckForm(urlForm); err != nil {
		return nil, err
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: postgres URL takes no #fragment (write '#' in a password as %%23)", driver.ErrInvalidOption)
	}
	opts := o.Options
	opts.Table, opts.SkipCreateTable = sqllease.TableParams(u, opts.Table, opts.SkipCreateTable)
	opts.DisableNotify = !u.Bool("notify", !opts.DisableNotify)
	settings := urlSettings(u)
	for _, name := range passThrough {
		if u.Has(name) {
			settings[name] = u.String(name, "")
		}
	}
	if v, ok := settings["database"]; ok {
		delete(settings, "database")
		settings["dbname"] = v
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	if settings["host"] == "" && settings["service"] == "" && os.Getenv("PGHOST") == "" && os.Getenv("PGSERVICE") == "" {
		return nil, fmt.Errorf("%w: %s URL names no host (nor a host parameter, a service, or PGHOST): use %s", driver.ErrInvalidOption, u.Scheme, urlForm)
	}
	password, hasPassword := settings["password"]
	delete(settings, "password")
	return openConfig(ctx, keywordValue(settings), opts, func(pcfg *pgxpool.Config) {
		if hasPassword {
			pcfg.ConnConfig.Password = password
		}
		if o.TLSConfig != nil {
			pcfg.ConnConfig.TLSConfig = o.TLSConfig.Clone()
			pcfg.ConnConfig.Fallbacks = nil
		}
		if o.ConfigurePool != nil {
			o.ConfigurePool(pcfg)
		}
	})
}

// Open connects to PostgreSQL with connString, in either form pgx's
// pgxpool.ParseConfig accepts: a postgres:// URL with only connection
// parameters (no table, create_table or notify: opts holds those), or a
// libpq keyword/value string such as
// "host=/run/postgresql dbname=app user=locker sslmode=disable". Missing
// parts come from the PG* environment variables and the password file, as
// with psql. The returned Client owns the pool and closes it on Close.
// Errors never include the password; a string that does not parse, or a
// table name that is not valid, is an error matching dlock.ErrInvalidOption,
// a server that cannot be reached one matching dlock.ErrUnavailable.
// The Client is made with clientOpts.
func Open(ctx context.Context, connString string, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := OpenDriver(ctx, connString, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// OpenDriver is Open's driver, for dlock.NewClient with custom options and
// for tests. Closing it closes its pool.
func OpenDriver(ctx context.Context, connString string, opts Options) (driver.Locker, error) {
	d, err := openConfig(ctx, connString, opts, nil)
	return d, driver.RedactError(err, connString)
}

// openConfig parses connString with pgx, lets adjust (when not nil) change
// the configuration (OpenLockerURL sets the password there, kept out of
// connString so that pgx's messages cannot quote it), and opens the pool and
// the driver.
func openConfig(ctx context.Context, connString string, opts Options, adjust func(*pgxpool.Config)) (driver.Locker, error) {
	pcfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres connection settings: %s", driver.ErrInvalidOption, parseMessage(err))
	}
	if adjust != nil {
		adjust(pcfg)
	}
	cc := pcfg.ConnConfig
	addr := hostPort(cc.Host, cc.Port)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, sqllease.Unavailable("postgres", addr, cc.Password, err)
	}
	d, err := open(ctx, poolQuerier{pool}, opts, addr, cc.Password, pool.Close)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}

// parseMessage is pgx's reason for refusing a connection string, without
// the string itself, which pgx quotes (redacting passwords only on a best
// effort basis).
func parseMessage(err error) string {
	msg := err.Error()
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) && strings.HasPrefix(msg, "cannot parse `") {
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			return msg[i+3:]
		}
	}
	return msg
}

// urlSettings returns the libpq settings the URL gives outside its query:
// user and password, the host list with its ports, and the database.
func urlSettings(u *driver.URL) map[string]string {
	s := map[string]string{}
	if u.User != nil {
		if name := u.User.Username(); name != "" {
			s["user"] = name
		}
		if pw, ok := u.User.Password(); ok && pw != "" {
			s["password"] = pw
		}
	}
	if u.Host != "" {
		var hosts, ports []string
		anyPort := false
		for _, h := range strings.Split(u.Host, ",") {
			host, port := h, ""
			if strings.HasPrefix(h, "[") {
				if end := strings.IndexByte(h, ']'); end >= 0 {
					host, port = h[1:end], strings.TrimPrefix(h[end+1:], ":")
				}
			} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
				host, port = h[:i], h[i+1:]
			}
			hosts, ports = append(hosts, host), append(ports, port)
			anyPort = anyPort || port != ""
		}
		s["host"] = strings.Join(hosts, ",")
		if anyPort {
			s["port"] = strings.Join(ports, ",")
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		s["dbname"] = db
	}
	return s
}

// keywordValue renders settings as a libpq keyword/value string, every value
// quoted.
func keywordValue(settings map[string]string) string {
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(settings[k])
		fmt.Fprintf(&b, "%s='%s' ", k, v)
	}
	return strings.TrimSpace(b.String())
}
