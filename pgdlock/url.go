package pgdlock

import (
	"context"
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
	dlock.Register(Scheme, driver.URLOpenerFunc(openURL))
	dlock.Register(SchemeAlt, driver.URLOpenerFunc(openURL))
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

// openURL opens a pgx pool from a postgres:// or postgresql:// URL.
func openURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	if err := u.CheckForm(urlForm); err != nil {
		return nil, err
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: postgres URL takes no #fragment (write '#' in a password as %%23)", driver.ErrInvalidOption)
	}
	cfg := Config{
		Table:           u.String("table", DefaultTable),
		SkipCreateTable: !u.Bool("create_table", true),
		DisableNotify:   !u.Bool("notify", true),
	}
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
	if cfg.Table == "" {
		u.Fail(fmt.Errorf("%w: parameter \"table\" is empty", driver.ErrInvalidOption))
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	if settings["host"] == "" && settings["service"] == "" && os.Getenv("PGHOST") == "" && os.Getenv("PGSERVICE") == "" {
		return nil, fmt.Errorf("%w: %s URL names no host (nor a host parameter, a service, or PGHOST): use %s", driver.ErrInvalidOption, u.Scheme, urlForm)
	}
	password, hasPassword := settings["password"]
	delete(settings, "password")
	return openConfig(ctx, keywordValue(settings), password, hasPassword, cfg)
}

// Open connects to PostgreSQL with connString, in either form pgx's
// pgxpool.ParseConfig accepts: a postgres:// URL with only connection
// parameters (no table, create_table or notify: cfg holds those), or a
// libpq keyword/value string such as
// "host=/run/postgresql dbname=app user=locker sslmode=disable". Missing
// parts come from the PG* environment variables and the password file, as
// with psql. The returned Client owns the pool and closes it on Close.
// Errors never include the password; a string that does not parse, or a
// table name that is not valid, is an error matching dlock.ErrInvalidOption,
// a server that cannot be reached one matching dlock.ErrUnavailable.
func Open(ctx context.Context, connString string, cfg Config, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := OpenDriver(ctx, connString, cfg)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...), nil
}

// OpenDriver is Open's driver, for dlock.NewClient with custom options and
// for tests. Closing it closes its pool.
func OpenDriver(ctx context.Context, connString string, cfg Config) (driver.Locker, error) {
	d, err := openConfig(ctx, connString, "", false, cfg)
	return d, driver.RedactError(err, connString)
}

// openConfig parses connString with pgx, sets password (when given: it is
// kept out of connString so that pgx's messages cannot quote it), and opens
// the pool and the driver.
func openConfig(ctx context.Context, connString, password string, hasPassword bool, cfg Config) (driver.Locker, error) {
	pcfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres connection settings: %s", driver.ErrInvalidOption, parseMessage(err))
	}
	cc := pcfg.ConnConfig
	if hasPassword {
		cc.Password = password
	}
	addr := hostPort(cc.Host, cc.Port)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, sqllease.Unavailable("postgres", addr, cc.Password, err)
	}
	d, err := open(ctx, poolQuerier{pool}, cfg, addr, cc.Password, pool.Close)
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
