package redlock

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/redisdlock"
)

// The URL schemes this package registers with dlock.Open.
const (
	Scheme      = "redlock"
	SchemeTLS   = "redlocks"
	defaultPort = "6379"
)

func init() {
	for _, s := range []string{Scheme, SchemeTLS} {
		dlock.Register(s, driver.URLOpenerFunc(OpenURL))
	}
}

// OpenURL opens a Driver from a parsed redlock:// or redlocks:// URL;
// dlock.Open calls it. It does not contact the nodes: the first lock
// operation does. See the package documentation for the URL form and its
// parameters.
func OpenURL(_ context.Context, u *driver.URL) (driver.Locker, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != Scheme && scheme != SchemeTLS {
		return nil, fmt.Errorf("%w: redlock cannot open scheme %q", driver.ErrInvalidOption, u.Scheme)
	}
	if err := u.RequireHost(scheme + "://[user:password@]host:port,host:port,...[/DB]"); err != nil {
		return nil, err
	}
	base, nodeOpts := redisdlock.ClientOptions(u, scheme == SchemeTLS)
	opts := Options{Prefix: nodeOpts.Prefix, FenceTTL: nodeOpts.FenceTTL}
	if u.Has("node_timeout") {
		opts.NodeTimeout = u.Duration("node_timeout", 0)
		if opts.NodeTimeout <= 0 {
			u.Fail(fmt.Errorf("%w: parameter \"node_timeout\" must be positive", driver.ErrInvalidOption))
		}
	}
	hosts, err := hostList(u.Host)
	if err != nil {
		return nil, err
	}
	db := 0
	if p := strings.Trim(u.Path, "/"); p != "" {
		if db, err = strconv.Atoi(p); err != nil || db < 0 {
			return nil, fmt.Errorf("%w: redlock URL: the path must be a database number >= 0 (redlock://host:port,.../DB)", driver.ErrInvalidOption)
		}
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	clients := make([]redis.UniversalClient, len(hosts))
	for i, h := range hosts {
		o := *base
		o.Addr, o.DB = h, db
		clients[i] = redis.NewClient(&o)
	}
	d, err := NewDriver(clients, opts)
	if err != nil {
		for _, c := range clients {
			_ = c.Close()
		}
		return nil, err
	}
	d.clients = clients
	return d, nil
}

// hostList splits "h1:p1,h2:p2", adds the default port where missing, and
// rejects duplicates (one server counted twice would fake a majority).
func hostList(s string) ([]string, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: redlock URL names no nodes (want redlock://host:port,host:port,...)", driver.ErrInvalidOption)
	}
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			// No port: "host" or "[::1]".
			host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), defaultPort
		}
		if host == "" || strings.ContainsAny(host, "[]/") {
			return nil, fmt.Errorf("%w: redlock URL host %q is not valid", driver.ErrInvalidOption, h)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: redlock URL port %q is not valid", driver.ErrInvalidOption, port)
		}
		addr := net.JoinHostPort(host, port)
		if slices.Contains(hosts, addr) {
			return nil, fmt.Errorf("%w: redlock URL names node %s twice", driver.ErrInvalidOption, addr)
		}
		hosts = append(hosts, addr)
	}
	return hosts, nil
}
