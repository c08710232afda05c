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

// Defaults used when neither the Options nor the URL says otherwise.
const (
	// DefaultPrefix is the etcd key prefix of every lock queue.
	DefaultPrefix = "/dlock/"
	// DefaultPort is the port of an endpoint given without one.
	DefaultPort = "2379"
	// DefaultDialTimeout bounds the connection set-up work clientv3 does
	// when a URL is opened (fetching an auth token when a user is given).
	DefaultDialTimeout = 5 * time.Second
	// DefaultRequestTimeout bounds each single request to etcd; waiting in
	// a queue is bounded only by the caller's context.
	DefaultRequestTimeout = 10 * time.Second
)

func init() {
	dlock.Register(Scheme, &URLOpener{})
	dlock.Register(SchemeTLS, &URLOpener{})
}

// Options configures a driver. The zero value uses the defaults: keys
// escaped under DefaultPrefix, each request bounded by
// DefaultRequestTimeout.
type Options struct {
	// Prefix is prepended to every lock's etcd key prefix. Empty means
	// DefaultPrefix, unless RawKeys is set.
	Prefix string
	// RawKeys uses lock keys verbatim, without escaping, after Prefix
	// (which may then be empty). Default false. With an empty Prefix a
	// dlock lock on K is the same lock as concurrency.NewMutex(session, K)
	// and `etcdctl lock K`. Keys containing "/" can then nest: the queue
	// of "a" also sees the queue entries of "a/b" (the waiters of "a" wait
	// for them as well; no two owners of one key ever hold it at once).
	RawKeys bool
	// RequestTimeout bounds each single request to etcd (not waiting in a
	// queue). Zero means DefaultRequestTimeout; a negative value is an
	// error matching dlock.ErrInvalidOption.
	RequestTimeout time.Duration
}

// NewClient returns a dlock Client taking locks through cli, a client the
// application already has, configured by opts and clientOpts. The Client
// does not close cli. A nil cli or invalid opts give an error matching
// dlock.ErrInvalidOption.
func NewClient(cli *clientv3.Client, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(cli, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// NewDriver returns the driver over cli, for dlock.NewClient, tests and
// advanced use. It implements driver.Locker, driver.Queuer,
// driver.BatchRefresher, driver.Lister and driver.ForceReleaser. Closing
// the driver does not close cli. A nil cli or invalid opts give an error
// matching dlock.ErrInvalidOption.
func NewDriver(cli *clientv3.Client, opts Options) (driver.Locker, error) {
	if cli == nil {
		return nil, fmt.Errorf("%w: etcd: nil *clientv3.Client", driver.ErrInvalidOption)
	}
	return newDriver(cli, false, strings.Join(cli.Endpoints(), ","), opts)
}

// OpenURL connects to the etcd cluster named by an etcd:// or etcds:// URL
// (see the package documentation) with the default settings and returns
// the driver, which owns its connection and closes it on Close. It is
// (&URLOpener{}).OpenLockerURL(ctx, u).
func OpenURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	return (&URLOpener{}).OpenLockerURL(ctx, u)
}

// URLOpener opens etcd:// and etcds:// URLs (see the package documentation
// for their parameters) with settings given in code. The zero value uses
// the defaults; init registers one for each scheme with dlock.Register. A
// query parameter of the URL wins over the field it overrides; a field no
// parameter overrides applies as it is.
type URLOpener struct {
	// Options are the driver's settings where the URL does not give them:
	// the prefix parameter replaces Prefix and RawKeys (prefix=P sets
	// Prefix P and RawKeys false; an empty P sets RawKeys with no
	// prefix), request-timeout replaces RequestTimeout.
	Options Options
	// DialTimeout bounds the connection set-up work clientv3 does in
	// OpenLockerURL (fetching an auth token when a user is given), and is
	// cut to the time left before ctx's deadline. The dial-timeout
	// parameter replaces it. Zero means DefaultDialTimeout; a negative
	// value is an error matching dlock.ErrInvalidOption.
	DialTimeout time.Duration
	// TLSConfig is the TLS configuration of etcds:// connections; it is
	// cloned, never changed. Nil means TLS 1.2 or later with the system's
	// root CAs. The URL's cacert (RootCAs), cert and key (Certificates),
	// server-name (ServerName) and insecure-skip-tls-verify
	// (InsecureSkipVerify) parameters replace those fields of the clone.
	// With an etcd:// URL (plain gRPC) a non-nil TLSConfig is an error
	// matching dlock.ErrInvalidOption.
	TLSConfig *tls.Config
	// ConfigureClient, when not nil, is called with the clientv3.Config
	// built from the URL and the fields above (endpoints, credentials,
	// timeouts, TLS, a logger that discards everything, TCP keep-alive)
	// just before the client is created, and may change any of it (gRPC
	// dial options, a logger, ...): what it sets wins over the URL. The
	// driver's own request timeout and prefix are not in it.
	ConfigureClient func(*clientv3.Config)
}

var _ driver.URLOpener = (*URLOpener)(nil)

// OpenLockerURL implements driver.URLOpener: it connects to the cluster u
// names and returns the driver, which owns its connection and closes it on
// Close. Errors never show the URL's password; an invalid URL or setting
// gives an error matching dlock.ErrInvalidOption, a failure to set up the
// client one matching dlock.ErrUnavailable.
func (o *URLOpener) OpenLockerURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	d, err := o.open(ctx, u)
	return d, u.RedactError(err)
}

func (o *URLOpener) open(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != Scheme && scheme != SchemeTLS {
		return nil, fmt.Errorf("%w: etcd: unsupported scheme %q (want %s or %s)", driver.ErrInvalidOption, u.Scheme, Scheme, SchemeTLS)
	}
	endpoints, err := parseEndpoints(u)
	if err != nil {
		return nil, err
	}
	opts := o.Options
	if u.Has("prefix") {
		opts.Prefix = u.String("prefix", "")
		opts.RawKeys = opts.Prefix == ""
	}
	dialTimeout := o.DialTimeout
	if dialTimeout == 0 {
		dialTimeout = DefaultDialTimeout
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	dialTimeout = u.Duration("dial-timeout", dialTimeout)
	opts.RequestTimeout = u.Duration("request-timeout", opts.RequestTimeout)
	caFile := u.String("cacert", "")
	certFile := u.String("cert", "")
	keyFile := u.String("key", "")
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSConfig != nil {
		base = o.TLSConfig.Clone()
	}
	insecure := u.Bool("insecure-skip-tls-verify", base.InsecureSkipVerify)
	serverName := u.String("server-name", base.ServerName)
	if err := u.Finish(); err != nil {
		return nil, err
	}
	if dialTimeout <= 0 || opts.RequestTimeout <= 0 {
		return nil, fmt.Errorf("%w: etcd: dial-timeout and request-timeout must be positive", driver.ErrInvalidOption)
	}
	tlsOn := scheme == SchemeTLS
	if !tlsOn && o.TLSConfig != nil {
		return nil, fmt.Errorf("%w: etcd: a TLS configuration needs the %s:// scheme", driver.ErrInvalidOption, SchemeTLS)
	}
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
		base.ServerName, base.InsecureSkipVerify = serverName, insecure
		if err := loadTLSFiles(base, caFile, certFile, keyFile); err != nil {
			return nil, err
		}
		ccfg.TLS = base
	}
	if u.User != nil {
		ccfg.Username = u.User.Username()
		ccfg.Password, _ = u.User.Password()
		if ccfg.Username == "" {
			return nil, fmt.Errorf("%w: etcd: empty user name in URL", driver.ErrInvalidOption)
		}
	}
	if o.ConfigureClient != nil {
		o.ConfigureClient(&ccfg)
	}
	addr := strings.Join(ccfg.Endpoints, ",")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		// clientv3 errors never include the password.
		return nil, fmt.Errorf("%w: etcd %s: %v", driver.ErrUnavailable, addr, err)
	}
	return newDriver(cli, true, addr, opts)
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

// loadTLSFiles reads the files the URL names (those not empty) into tc:
// caFile's certificates replace tc.RootCAs, the pair certFile and keyFile
// replaces tc.Certificates.
func loadTLSFiles(tc *tls.Config, caFile, certFile, keyFile string) error {
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("%w: etcd: cacert: %v", driver.ErrInvalidOption, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%w: etcd: cacert %s holds no PEM certificate", driver.ErrInvalidOption, caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return fmt.Errorf("%w: etcd: cert and key must be given together", driver.ErrInvalidOption)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("%w: etcd: client certificate: %v", driver.ErrInvalidOption, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return nil
}
