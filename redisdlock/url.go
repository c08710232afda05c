package redisdlock

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

// The URL schemes this package registers with dlock.Open.
const (
	Scheme            = "redis"
	SchemeTLS         = "rediss"
	SchemeCluster     = "redis+cluster"
	SchemeClusterTLS  = "rediss+cluster"
	SchemeSentinel    = "redis+sentinel"
	SchemeSentinelTLS = "rediss+sentinel"
)

func init() {
	for _, s := range []string{Scheme, SchemeTLS, SchemeCluster, SchemeClusterTLS, SchemeSentinel, SchemeSentinelTLS} {
		dlock.Register(s, &URLOpener{})
	}
}

// OpenURL opens a driver from a parsed URL with the default settings:
// (&URLOpener{}).OpenLockerURL(ctx, u). dlock.Open calls it for the
// schemes of this package.
func OpenURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	return (&URLOpener{}).OpenLockerURL(ctx, u)
}

// URLOpener opens drivers from redis://, rediss://, redis+cluster://,
// rediss+cluster://, redis+sentinel:// and rediss+sentinel:// URLs (see
// the package documentation for their forms and parameters), with
// settings that code gives and a URL cannot. The zero value opens with the
// defaults; dlock.Open uses it. dlock.OpenWith opens a URL with a
// configured one.
type URLOpener struct {
	// Options are the driver's defaults: the URL's prefix and fence_ttl
	// parameters, when present, override Options.Prefix and
	// Options.FenceTTL. Options.Addr, when not empty, names the server in
	// errors instead of the URL's hosts.
	Options Options
	// TLSConfig is the TLS configuration of the rediss* schemes (cloned;
	// default: TLS 1.2 or newer, verifying the server against the system
	// roots). The URL's tls_* parameters, when present, override the
	// fields they set: tls_ca_file RootCAs, tls_cert_file and tls_key_file
	// Certificates, tls_server_name ServerName, tls_insecure_skip_verify
	// InsecureSkipVerify. It is not used for the schemes without TLS.
	TLSConfig *tls.Config
	// ClientOptions, when not nil, is called with the go-redis options
	// built from the URL (Addrs, MasterName and DB set, context deadlines
	// on sockets, go-redis retries off) just before the client is made,
	// and may change any of them (a CredentialsProvider, a Dialer, a
	// ClientName): what it sets wins over the URL. The client is made
	// with the options' Simple, Cluster or Failover method, as the scheme
	// says.
	ClientOptions func(*redis.UniversalOptions)
}

// OpenLockerURL implements driver.URLOpener. It does not contact the
// server: the first lock operation does. The driver closes the go-redis
// client it made when it is closed. A URL that is not valid gives an error
// matching dlock.ErrInvalidOption.
func (o *URLOpener) OpenLockerURL(_ context.Context, u *driver.URL) (driver.Locker, error) {
	scheme := strings.ToLower(u.Scheme)
	if err := u.RequireHost(urlForm(scheme)); err != nil {
		return nil, err
	}
	form := redisengine.URLForm{TLS: strings.HasPrefix(scheme, "rediss"), Sentinel: strings.Contains(scheme, "sentinel")}
	ro, conf := redisengine.ReadURL(u, form, o.Options.engineConfig(), o.TLSConfig)
	kind, err := readAddrs(u, scheme, ro)
	if err != nil {
		return nil, err
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	if o.ClientOptions != nil {
		o.ClientOptions(ro)
	}
	var rdb redis.UniversalClient
	switch kind {
	case Scheme:
		so := ro.Simple()
		rdb = redis.NewClient(so)
		conf.Addr = cmp.Or(conf.Addr, so.Addr)
	case SchemeCluster:
		rdb = redis.NewClusterClient(ro.Cluster())
		conf.Addr = cmp.Or(conf.Addr, "cluster "+strings.Join(ro.Addrs, ","))
	default:
		rdb = redis.NewFailoverClient(ro.Failover())
		conf.Addr = cmp.Or(conf.Addr, fmt.Sprintf("sentinel %s master %s", strings.Join(ro.Addrs, ","), ro.MasterName))
	}
	conf.OwnsClient = true
	d, err := redisengine.New(rdb, conf)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return d, nil
}

// readAddrs sets the addresses, the master name and the database of ro
// from the host and path of u, and returns the kind of client to make:
// Scheme (one server), SchemeCluster or SchemeSentinel.
func readAddrs(u *driver.URL, scheme string, ro *redis.UniversalOptions) (string, error) {
	switch scheme {
	case Scheme, SchemeTLS:
		hosts, err := redisengine.HostList(u.Host, redisengine.DefaultPort, "redis")
		if err != nil {
			return "", err
		}
		if len(hosts) != 1 {
			return "", fmt.Errorf("%w: redis URL names %d hosts; use redis+cluster:// or redis+sentinel:// for several", driver.ErrInvalidOption, len(hosts))
		}
		ro.Addrs = hosts
		ro.DB, err = redisengine.ParseDB(strings.TrimPrefix(u.Path, "/"), "redis", "redis://host:port/DB")
		return Scheme, err
	case SchemeCluster, SchemeClusterTLS:
		hosts, err := redisengine.HostList(u.Host, redisengine.DefaultPort, "redis")
		if err != nil {
			return "", err
		}
		if u.Path != "" && u.Path != "/" {
			return "", fmt.Errorf("%w: %s URL takes no path (Redis Cluster has only database 0)", driver.ErrInvalidOption, scheme)
		}
		ro.Addrs = hosts
		return SchemeCluster, nil
	case SchemeSentinel, SchemeSentinelTLS:
		hosts, err := redisengine.HostList(u.Host, redisengine.DefaultSentinelPort, "redis")
		if err != nil {
			return "", err
		}
		parts := strings.Split(strings.Trim(u.Path, "/"), "/")
		if parts[0] == "" || len(parts) > 2 {
			return "", fmt.Errorf("%w: %s URL needs the master name as its path: %s://host:port,host:port/MASTER[/DB]", driver.ErrInvalidOption, scheme, scheme)
		}
		ro.Addrs, ro.MasterName = hosts, parts[0]
		if len(parts) == 2 {
			ro.DB, err = redisengine.ParseDB(parts[1], "redis", "redis://host:port/DB")
		}
		return SchemeSentinel, err
	}
	return "", fmt.Errorf("%w: redisdlock cannot open scheme %q", driver.ErrInvalidOption, u.Scheme)
}

// urlForm is the URL shape of scheme, for error messages.
func urlForm(scheme string) string {
	switch {
	case strings.Contains(scheme, "cluster"):
		return scheme + "://[user:password@]host:port[,host:port...]"
	case strings.Contains(scheme, "sentinel"):
		return scheme + "://[user:password@]host:port[,host:port...]/MASTER[/DB]"
	}
	return scheme + "://[user:password@]host[:port][/DB]"
}
