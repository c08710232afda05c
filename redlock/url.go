package redlock

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

// The URL schemes this package registers with dlock.Open.
const (
	Scheme    = "redlock"
	SchemeTLS = "redlocks"
)

func init() {
	for _, s := range []string{Scheme, SchemeTLS} {
		dlock.Register(s, &URLOpener{})
	}
}

// OpenURL opens a driver from a parsed redlock:// or redlocks:// URL with
// the default settings: (&URLOpener{}).OpenLockerURL(ctx, u). dlock.Open
// calls it.
func OpenURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	return (&URLOpener{}).OpenLockerURL(ctx, u)
}

// URLOpener opens drivers from redlock:// and redlocks:// URLs (see the
// package documentation for their form and parameters), with settings that
// code gives and a URL cannot. The zero value opens with the defaults;
// dlock.Open uses it. dlock.OpenWith opens a URL with a configured one.
type URLOpener struct {
	// Options are the driver's defaults: the URL's prefix, fence_ttl and
	// node_timeout parameters, when present, override Options.Prefix,
	// Options.FenceTTL and Options.NodeTimeout.
	Options Options
	// TLSConfig is the TLS configuration of redlocks:// (cloned, for every
	// node; default: TLS 1.2 or newer, verifying each node against the
	// system roots). The URL's tls_* parameters, when present, override
	// the fields they set, as for redisdlock.URLOpener. It is not used for
	// redlock://.
	TLSConfig *tls.Config
	// ClientOptions, when not nil, is called with the go-redis options of
	// each node built from the URL (Addr and DB set, context deadlines on
	// sockets, go-redis retries off) just before that node's client is
	// made, and may change any of them: what it sets wins over the URL.
	ClientOptions func(*redis.Options)
}

// OpenLockerURL implements driver.URLOpener. It does not contact the
// nodes: the first lock operation does. The driver closes the go-redis
// clients it made when it is closed. A URL that is not valid gives an
// error matching dlock.ErrInvalidOption.
func (o *URLOpener) OpenLockerURL(_ context.Context, u *driver.URL) (driver.Locker, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != Scheme && scheme != SchemeTLS {
		return nil, fmt.Errorf("%w: redlock cannot open scheme %q", driver.ErrInvalidOption, u.Scheme)
	}
	const form = "redlock://host:port,.../DB"
	if err := u.RequireHost(scheme + "://[user:password@]host:port,host:port,...[/DB]"); err != nil {
		return nil, err
	}
	defaults := redisengine.Config{Prefix: o.Options.Prefix, FenceTTL: o.Options.FenceTTL}
	base, conf := redisengine.ReadURL(u, redisengine.URLForm{TLS: scheme == SchemeTLS}, defaults, o.TLSConfig)
	opts := Options{Prefix: conf.Prefix, FenceTTL: conf.FenceTTL, NodeTimeout: o.Options.NodeTimeout}
	if u.Has("node_timeout") {
		opts.NodeTimeout = u.Duration("node_timeout", 0)
		if opts.NodeTimeout <= 0 {
			u.Fail(fmt.Errorf("%w: parameter \"node_timeout\" must be positive", driver.ErrInvalidOption))
		}
	}
	hosts, err := redisengine.HostList(u.Host, redisengine.DefaultPort, "redlock")
	if err != nil {
		return nil, err
	}
	for i, h := range hosts {
		// One server counted twice would fake a majority.
		if slices.Contains(hosts[:i], h) {
			return nil, fmt.Errorf("%w: redlock URL names node %s twice", driver.ErrInvalidOption, h)
		}
	}
	base.DB, err = redisengine.ParseDB(strings.Trim(u.Path, "/"), "redlock", form)
	if err != nil {
		return nil, err
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	clients := make([]redis.UniversalClient, len(hosts))
	for i, h := range hosts {
		base.Addrs = []string{h}
		no := base.Simple()
		if o.ClientOptions != nil {
			o.ClientOptions(no)
		}
		clients[i] = redis.NewClient(no)
	}
	d, err := newLocker(clients, opts)
	if err != nil {
		for _, c := range clients {
			_ = c.Close()
		}
		return nil, err
	}
	d.clients = clients
	return d, nil
}
