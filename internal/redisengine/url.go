package redisengine

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
)

// Defaults of the connection parameters of a URL.
const (
	DefaultPort             = "6379"
	DefaultSentinelPort     = "26379"
	defaultDialTimeout      = 5 * time.Second
	defaultReadWriteTimeout = 3 * time.Second
)

// URLForm says which parameters a scheme of the Redis family takes besides
// those every scheme takes.
type URLForm struct {
	// TLS: the scheme connects over TLS and takes the tls_* parameters.
	TLS bool
	// Sentinel: the scheme finds its master through Sentinels and takes
	// sentinel_username and sentinel_password.
	Sentinel bool
}

// ReadURL consumes the query parameters that every URL of the Redis family
// shares (the user information; dial_timeout, read_timeout,
// write_timeout, pool_size; prefix, fence_ttl; and the tls_* or sentinel_*
// parameters when form says so) and returns them as go-redis options and
// an engine Config. The go-redis options apply context deadlines to
// sockets and turn go-redis's retries off (dlock retries, with the
// caller's strategy); Addrs, MasterName and DB are left to the caller,
// which builds its client with their Simple, Cluster or Failover method.
//
// defaults gives the Prefix and FenceTTL that a URL without prefix or
// fence_ttl gets (its other fields are copied to the Config returned).
// With form.TLS, tlsConf (when not nil) is the TLS configuration, cloned,
// whose fields the tls_* parameters present in the URL override; without
// form.TLS, tlsConf is not used. Errors are recorded in u: the caller
// consumes its own parameters and then calls u.Finish.
func ReadURL(u *driver.URL, form URLForm, defaults Config, tlsConf *tls.Config) (*redis.UniversalOptions, Config) {
	o := &redis.UniversalOptions{
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
	}
	if u.User != nil {
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
	}
	c := defaults
	c.Prefix = u.String("prefix", defaults.Prefix)
	c.FenceTTL = u.Duration("fence_ttl", defaults.FenceTTL)
	o.DialTimeout = positive(u, "dial_timeout", defaultDialTimeout)
	o.ReadTimeout = positive(u, "read_timeout", defaultReadWriteTimeout)
	o.WriteTimeout = positive(u, "write_timeout", o.ReadTimeout)
	if u.Has("pool_size") {
		o.PoolSize = u.Int("pool_size", 0)
		if o.PoolSize < 1 {
			u.Fail(fmt.Errorf("%w: parameter \"pool_size\" must be at least 1", driver.ErrInvalidOption))
		}
	}
	if form.Sentinel {
		o.SentinelUsername = u.String("sentinel_username", "")
		o.SentinelPassword = u.String("sentinel_password", "")
	}
	if form.TLS {
		o.TLSConfig = readTLS(u, tlsConf)
	}
	return o, c
}

func positive(u *driver.URL, name string, def time.Duration) time.Duration {
	d := u.Duration(name, def)
	if d <= 0 {
		u.Fail(fmt.Errorf("%w: parameter %q must be positive", driver.ErrInvalidOption, name))
		return def
	}
	return d
}

// readTLS returns a clone of base (or a new configuration requiring TLS
// 1.2 when base is nil) with the tls_* parameters of u applied.
func readTLS(u *driver.URL, base *tls.Config) *tls.Config {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		conf = base.Clone()
	}
	// Empty: crypto/tls verifies the host of each address dialled.
	conf.ServerName = u.String("tls_server_name", conf.ServerName)
	conf.InsecureSkipVerify = u.Bool("tls_insecure_skip_verify", conf.InsecureSkipVerify)
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

// ParseDB reads a database number from a URL path element ("" is 0). name
// is the scheme family ("redis") and form the URL's shape, for the error.
func ParseDB(s, name, form string) (int, error) {
	if s == "" {
		return 0, nil
	}
	db, err := strconv.Atoi(s)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("%w: %s URL: the path must be a database number >= 0 (%s)", driver.ErrInvalidOption, name, form)
	}
	return db, nil
}

// HostList splits the host part of a URL, "h1:p1,h2:p2", into host:port
// addresses, adding port where one is missing. name is the scheme family
// ("redis"), for errors.
func HostList(s, port, name string) ([]string, error) {
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		if h == "" {
			return nil, fmt.Errorf("%w: %s URL has an empty host", driver.ErrInvalidOption, name)
		}
		host, p, err := net.SplitHostPort(h)
		if err != nil {
			// No port: "host" or "[::1]".
			host, p = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), port
		}
		if host == "" || strings.ContainsAny(host, "[]/") {
			return nil, fmt.Errorf("%w: %s URL host %q is not valid", driver.ErrInvalidOption, name, h)
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: %s URL port %q is not valid", driver.ErrInvalidOption, name, p)
		}
		hosts = append(hosts, net.JoinHostPort(host, p))
	}
	return hosts, nil
}
