package pgdlock

import (
	"context"
	"fmt"
	"net/url"

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

// passThrough lists the pgx connection parameters a URL may carry; they
// are handed to pgx unchanged. Every other parameter that is not the
// driver's own is an error.
var passThrough = []string{
	"sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslsni",
	"connect_timeout", "application_name", "target_session_attrs",
	"pool_max_conns", "pool_min_conns", "pool_max_conn_lifetime", "pool_max_conn_idle_time",
	"default_query_exec_mode",
}

const urlForm = "postgres://[user[:password]@][host][:port][,...]/dbname[?params]"

// openURL opens a pgx pool from a postgres:// or postgresql:// URL.
func openURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	if err := u.CheckForm(urlForm); err != nil {
		return nil, err
	}
	cfg := Config{
		Table:           u.String("table", DefaultTable),
		SkipCreateTable: !u.Bool("create_table", true),
		DisableNotify:   !u.Bool("notify", true),
	}
	pass := url.Values{}
	for _, name := range passThrough {
		if u.Has(name) {
			pass.Set(name, u.String(name, ""))
		}
	}
	if cfg.Table == "" {
		u.Fail(fmt.Errorf("%w: parameter \"table\" is empty", driver.ErrInvalidOption))
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	password, _ := u.User.Password()
	cu := *u.URL
	cu.RawQuery = pass.Encode()
	cu.Fragment, cu.RawFragment = "", ""
	pcfg, err := pgxpool.ParseConfig(cu.String())
	if err != nil {
		return nil, u.RedactError(fmt.Errorf("%w: postgres URL %s: %s", driver.ErrInvalidOption, u.Redacted(), sqllease.Redact(err.Error(), password)))
	}
	cc := pcfg.ConnConfig
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, sqllease.Unavailable("postgres", hostPort(cc.Host, cc.Port), cc.Password, err)
	}
	d, err := open(ctx, poolQuerier{pool}, cfg, hostPort(cc.Host, cc.Port), cc.Password, pool.Close)
	if err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}
