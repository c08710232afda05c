package redisdlock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// The URL schemes this package registers with dlock.Open.
const (
	Scheme                  = "redis"
	SchemeTLS               = "rediss"
	SchemeCluster           = "redis+cluster"
	SchemeClusterTLS        = "rediss+cluster"
	SchemeSentinel          = "redis+sentinel"
	SchemeSentinelTLS       = "rediss+sentinel"
	defaultPort             = "6379"
	defaultSentinelPort     = "26379"
	defaultDialTimeout      = 5 * time.Second
	defaultReadWriteTimeout = 3 * time.Second
)

func init() {
	for _, s := range []string{Scheme, SchemeTLS, SchemeCluster, SchemeClusterTLS, SchemeSentinel, SchemeSentinelTLS} {
		dlock.Register(s, driver.URLOpenerFunc(OpenURL))
	}
}

// connParams are the parameters every scheme shares.
type connParams struct {
	user, password   string
	dialTimeout      time.Duration
	readTimeout      time.Duration
	writeTimeout     time.Duration
	poolSize         int
	tls              *tls.Config
	opts             Options
	sentinelUser     string
	sentinelPassword string
}

// OpenURL opens a Driver from a parsed URL; dlock.Open calls it for the
// schemes of this package. It does not contact the server: the first lock
// operation does. See the package documentation for the URL forms and
// parameters.
func OpenURL(_ context.Context, u *driver.URL) (driver.Locker, error) {
	scheme := strings.ToLower(u.Scheme)
	if err := u.RequireHost(urlForm(scheme)); err != nil {
		return nil, err
	}
	p := readParams(u, strings.Contains(scheme, "sentinel"), strings.HasPrefix(scheme, "rediss"))
	var (
		rdb  redis.UniversalClient
		addr string
	)
	switch scheme {
	case Scheme, SchemeTLS:
		host, err := oneHost(u.Host)
		if err != nil {
			return nil, err
		}
		db, err := parseDB(strings.TrimPrefix(u.Path, "/"))
		if err != nil {
			return nil, err
		}
		if err := u.Finish(); err != nil {
			return nil, err
		}
		addr = host
		rdb = redis.NewClient(&redis.Options{
			Addr:                  host,
			Username:              p.user,
			Password:              p.password,
			DB:                    db,
			DialTimeout:           p.dialTimeout,
			ReadTimeout:           p.readTimeout,
			WriteTimeout:          p.writeTimeout,
			PoolSize:              p.poolSize,
			TLSConfig:             p.tls,
			ContextTimeoutEnabled: true,
			MaxRetries:            -1,
			DialerRetries:         1,
		})
	case SchemeCluster, SchemeClusterTLS:
		hosts, err := hostList(u.Host, defaultPort)
		if err != nil {
			return nil, err
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("%w: %s URL takes no path (Redis Cluster has only database 0)", driver.ErrInvalidOption, scheme)
		}
		if err := u.Finish(); err != nil {
			return nil, err
		}
		addr = "cluster " + strings.Join(hosts, ",")
		rdb = redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                 hosts,
			Username:              p.user,
			Password:              p.password,
			DialTimeout:           p.dialTimeout,
			ReadTimeout:           p.readTimeout,
			WriteTimeout:          p.writeTimeout,
			PoolSize:              p.poolSize,
			TLSConfig:             p.tls,
			ContextTimeoutEnabled: true,
			MaxRetries:            -1,
			DialerRetries:         1,
		})
	case SchemeSentinel, SchemeSentinelTLS:
		hosts, err := hostList(u.Host, defaultSentinelPort)
		if err != nil {
			return nil, err
		}
		parts := strings.Split(strings.Trim(u.Path, "/"), "/")
		if parts[0] == "" || len(parts) > 2 {
			return nil, fmt.Errorf("%w: %s URL needs the master name as its path: %s://host:port,host:port/MASTER[/DB]", driver.ErrInvalidOption, scheme, scheme)
		}
		db := 0
		if len(parts) == 2 {
			if db, err = parseDB(parts[1]); err != nil {
				return nil, err
			}
		}
		if err := u.Finish(); err != nil {
			return nil, err
		}
		addr = fmt.Sprintf("sentinel %s master %s", strings.Join(hosts, ","), parts[0])
		rdb = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:            parts[0],
			SentinelAddrs:         hosts,
			SentinelUsername:      p.sentinelUser,
			SentinelPassword:      p.sentinelPassword,
			Username:              p.user,
			Password:              p.password,
			DB:                    db,
			DialTimeout:           p.dialTimeout,
			ReadTimeout:           p.readTimeout,
			WriteTimeout:          p.writeTimeout,
			PoolSize:              p.poolSize,
			TLSConfig:             p.tls,
			ContextTimeoutEnabled: true,
			MaxRetries:            -1,
			DialerRetries:         1,
		})
	default:
		return nil, fmt.Errorf("%w: redisdlock cannot open scheme %q", driver.ErrInvalidOption, u.Scheme)
	}
	p.opts.Addr = addr
	d, err := NewDriver(rdb, p.opts)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	d.ownsClient = true
	return d, nil
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

// ClientOptions reads from u what a redis:// URL gives one server: the user
// and password of its user information, the parameters dial_timeout,
// read_timeout, write_timeout and pool_size, with tlsOn the tls_*
// parameters, and the driver parameters prefix and fence_ttl (see the
// package documentation for each and its default). It returns them as a
// template for redis.NewClient, with context deadlines on sockets and
// go-redis's retries off as for the clients OpenURL makes, leaving Addr and
// DB to the caller, and as driver Options. Errors are recorded in u; the
// caller consumes its own parameters and then calls u.Finish. It is for
// drivers built on this one, such as package redlock.
func ClientOptions(u *driver.URL, tlsOn bool) (*redis.Options, Options) {
	p := readParams(u, false, tlsOn)
	return &redis.Options{
		Username:              p.user,
		Password:              p.password,
		DialTimeout:           p.dialTimeout,
		ReadTimeout:           p.readTimeout,
		WriteTimeout:          p.writeTimeout,
		PoolSize:              p.poolSize,
		TLSConfig:             p.tls,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
	}, p.opts
}

// readParams consumes every query parameter the scheme accepts. Errors are
// recorded in u and come out of u.Finish.
func readParams(u *driver.URL, sentinel, tlsOn bool) *connParams {
	p := &connParams{}
	if u.User != nil {
		p.user = u.User.Username()
		p.password, _ = u.User.Password()
	}
	p.opts.Prefix = u.String("prefix", DefaultPrefix)
	p.opts.FenceTTL = u.Duration("fence_ttl", DefaultFenceTTL)
	p.dialTimeout = positive(u, "dial_timeout", defaultDialTimeout)
	p.readTimeout = positive(u, "read_timeout", defaultReadWriteTimeout)
	p.writeTimeout = positive(u, "write_timeout", p.readTimeout)
	if u.Has("pool_size") {
		p.poolSize = u.Int("pool_size", 0)
		if p.poolSize < 1 {
			u.Fail(fmt.Errorf("%w: parameter \"pool_size\" must be at least 1", driver.ErrInvalidOption))
		}
	}
	if sentinel {
		p.sentinelUser = u.String("sentinel_username", "")
		p.sentinelPassword = u.String("sentinel_password", "")
	}
	if tlsOn {
		p.tls = readTLS(u)
	}
	return p
}

func positive(u *driver.URL, name string, def time.Duration) time.Duration {
	d := u.Duration(name, def)
	if d <= 0 {
		u.Fail(fmt.Errorf("%w: parameter %q must be positive", driver.ErrInvalidOption, name))
		return def
	}
	return d
}

func readTLS(u *driver.URL) *tls.Config {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	// Empty: crypto/tls verifies the host of each address dialled.
	conf.ServerName = u.String("tls_server_name", "")
	conf.InsecureSkipVerify = u.Bool("tls_insecure_skip_verify", false)
	if ca := u.String("tls_ca_file", ""); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			u.Fail(fmt.Errorf("%w: parameter \"tls_ca_file\": %v", driver.ErrInvalidOption, err))
		} else {
			conf.RootCAs = x509.NewCertPool()
			if !conf.RootCAs.AppendCertsFromPEM(pem) {
				u.Fail(fmt.Errorf("%w: parameter \"tls_ca_file\": no PEM certificate in %s", driver.ErrInvalidOption, ca))
			}
		}
	}
	cert, key := u.String("tls_cert_file", ""), u.String("tls_key_file", "")
	switch {
	case cert != "" && key != "":
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			u.Fail(fmt.Errorf("%w: parameters \"tls_cert_file\", \"tls_key_file\": %v", driver.ErrInvalidOption, err))
		} else {
			conf.Certificates = []tls.Certificate{pair}
		}
	case cert != "" || key != "":
		u.Fail(fmt.Errorf("%w: parameters \"tls_cert_file\" and \"tls_key_file\" go together", driver.ErrInvalidOption))
	}
	return conf
}

func parseDB(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	db, err := strconv.Atoi(s)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("%w: redis URL: the path must be a database number >= 0 (redis://host:port/DB)", driver.ErrInvalidOption)
	}
	return db, nil
}

// oneHost returns host:port from a URL host, with the default port added.
func oneHost(h string) (string, error) {
	hosts, err := hostList(h, defaultPort)
	if err != nil {
		return "", err
	}
	if len(hosts) != 1 {
		return "", fmt.Errorf("%w: redis URL names %d hosts; use redis+cluster:// or redis+sentinel:// for several", driver.ErrInvalidOption, len(hosts))
	}
	return hosts[0], nil
}

// hostList splits "h1:p1,h2:p2" and adds the default port where missing.
func hostList(s, port string) ([]string, error) {
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		if h == "" {
			return nil, fmt.Errorf("%w: redis URL has an empty host", driver.ErrInvalidOption)
		}
		host, p, err := net.SplitHostPort(h)
		if err != nil {
			// No port: "host" or "[::1]".
			host, p = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), port
		}
		if host == "" || strings.ContainsAny(host, "[]/") {
			return nil, fmt.Errorf("%w: redis URL host %q is not valid", driver.ErrInvalidOption, h)
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: redis URL port %q is not valid", driver.ErrInvalidOption, p)
		}
		hosts = append(hosts, net.JoinHostPort(host, p))
	}
	return hosts, nil
}
