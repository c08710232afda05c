package etcddlock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// URL schemes this package registers with dlock.Open.
const (
	// Scheme connects over plain gRPC.
	Scheme = "etcd"
	// SchemeTLS connects over TLS.
	SchemeTLS = "etcds"
)

// Defaults used when neither the Config nor the URL says otherwise.
const (
	// DefaultPrefix is the etcd key prefix of every lock queue.
	DefaultPrefix = "/dlock/"
	// DefaultPort is the port of an endpoint given without one.
	DefaultPort = "2379"
	// DefaultDialTimeout bounds the connection set-up work clientv3 does
	// in Open (fetching an auth token when a user is given).
	DefaultDialTimeout = 5 * time.Second
	// DefaultRequestTimeout bounds each single request to etcd; waiting in
	// a queue is bounded only by the caller's context.
	DefaultRequestTimeout = 10 * time.Second
)

func init() {
	dlock.Register(Scheme, driver.URLOpenerFunc(openURL))
	dlock.Register(SchemeTLS, driver.URLOpenerFunc(openURL))
}

// Config configures a driver. The zero value uses the defaults: keys escaped
// under DefaultPrefix.
type Config struct {
	// Prefix is prepended to every lock's etcd key prefix. Empty means
	// DefaultPrefix, unless RawKeys is set.
	Prefix string
	// RawKeys uses lock keys verbatim, without escaping, after Prefix
	// (which may then be empty). With an empty Prefix a dlock lock on K is
	// the same lock as concurrency.NewMutex(session, K) and `etcdctl lock K`.
	// Keys containing "/" can then nest: the queue of "a" also sees the
	// queue entries of "a/b" (the waiters of "a" wait for them as well;
	// no two owners of one key ever hold it at once).
	RawKeys bool
	// RequestTimeout bounds each single request to etcd. Zero means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// NewClient returns a dlock Client taking locks through cli, a client the
// application already has. The Client does not close cli.
func NewClient(cli *clientv3.Client, cfg Config, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(cli, cfg)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...), nil
}

// NewDriver returns the driver over cli, for dlock.NewClient, tests and
// advanced use. It implements driver.Locker, driver.Queuer and
// driver.BatchRefresher. Closing the
// driver does not close cli.
func NewDriver(cli *clientv3.Client, cfg Config) (driver.Locker, error) {
	if cli == nil {
		return nil, fmt.Errorf("%w: etcd: nil *clientv3.Client", driver.ErrInvalidOption)
	}
	return newDriver(cli, false, strings.Join(cli.Endpoints(), ","), cfg)
}

// OpenDriver connects to the etcd cluster named by an etcd:// or etcds://
// URL (see the package documentation) and returns the driver, which owns
// its connection and closes it on Close.
func OpenDriver(ctx context.Context, rawURL string) (driver.Locker, error) {
	u, err := driver.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	d, err := openURL(ctx, u)
	return d, u.RedactError(err)
}

func openURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != Scheme && scheme != SchemeTLS {
		return nil, fmt.Errorf("%w: etcd: unsupported scheme %q (want %s or %s)", driver.ErrInvalidOption, u.Scheme, Scheme, SchemeTLS)
	}
	endpoints, err := parseEndpoints(u)
	if err != nil {
		return nil, err
	}
	cfg := Config{}
	if u.Has("prefix") {
		cfg.Prefix = u.String("prefix", "")
		cfg.RawKeys = cfg.Prefix == ""
	}
	dialTimeout := u.Duration("dial-timeout", DefaultDialTimeout)
	cfg.RequestTimeout = u.Duration("request-timeout", DefaultRequestTimeout)
	caFile := u.String("cacert", "")
	certFile := u.String("cert", "")
	keyFile := u.String("key", "")
	insecure := u.Bool("insecure-skip-tls-verify", false)
	serverName := u.String("server-name", "")
	if err := u.Finish(); err != nil {
		return nil, err
	}
	if dialTimeout <= 0 || cfg.RequestTimeout <= 0 {
		return nil, fmt.Errorf("%w: etcd: dial-timeout and request-timeout must be positive", driver.ErrInvalidOption)
	}
	tlsOn := scheme == SchemeTLS
	if !tlsOn && (caFile != "" || certFile != "" || keyFile != "" || insecure || serverName != "") {
		return nil, fmt.Errorf("%w: etcd: cacert, cert, key, server-name and insecure-skip-tls-verify need the %s:// scheme", driver.ErrInvalidOption, SchemeTLS)
	}
	ccfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		Logger:      zap.NewNop(),
		// Notice a dead connection (a member killed behind a live socket)
		// without waiting for TCP to give up.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < ccfg.DialTimeout {
		ccfg.DialTimeout = max(time.Until(dl), time.Millisecond)
	}
	if tlsOn {
		tc, err := tlsConfig(caFile, certFile, keyFile, serverName, insecure)
		if err != nil {
			return nil, err
		}
		ccfg.TLS = tc
	}
	if u.User != nil {
		ccfg.Username = u.User.Username()
		ccfg.Password, _ = u.User.Password()
		if ccfg.Username == "" {
			return nil, fmt.Errorf("%w: etcd: empty user name in URL", driver.ErrInvalidOption)
		}
	}
	addr := strings.Join(endpoints, ",")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		// clientv3 errors never include the password.
		return nil, fmt.Errorf("%w: etcd %s: %v", driver.ErrUnavailable, addr, err)
	}
	return newDriver(cli, true, addr, cfg)
}

func parseEndpoints(u *driver.URL) ([]string, error) {
	if err := u.RequireHost(u.Scheme + "://[user:password@]host:port[,host:port...]"); err != nil {
		return nil, err
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%w: etcd URL takes no path; use the prefix parameter", driver.ErrInvalidOption)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("%w: etcd URL takes no #fragment", driver.ErrInvalidOption)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: etcd URL has no host: want %s://host:port[,host:port...]", driver.ErrInvalidOption, Scheme)
	}
	var eps []string
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			return nil, fmt.Errorf("%w: etcd URL has an empty endpoint in %q", driver.ErrInvalidOption, u.Host)
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			// No port: the whole thing is the host.
			host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), DefaultPort
		}
		if host == "" || port == "" || strings.Contains(host, "/") {
			return nil, fmt.Errorf("%w: etcd URL endpoint %q is not host:port", driver.ErrInvalidOption, h)
		}
		eps = append(eps, net.JoinHostPort(host, port))
	}
	return eps, nil
}

func tlsConfig(caFile, certFile, keyFile, serverName string, insecure bool) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd: cacert: %v", driver.ErrInvalidOption, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: etcd: cacert %s holds no PEM certificate", driver.ErrInvalidOption, caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: etcd: cert and key must be given together", driver.ErrInvalidOption)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd: client certificate: %v", driver.ErrInvalidOption, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
