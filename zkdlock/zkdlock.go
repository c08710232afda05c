package zkdlock

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// Scheme is the URL scheme this package registers.
const Scheme = "zk"

// Defaults of the URL parameters and of the URLOpener's settings.
const (
	// DefaultSessionTimeout is the session timeout a URL asks for when
	// neither it (session_timeout) nor URLOpener.Options says otherwise.
	DefaultSessionTimeout = 30 * time.Second
	// DefaultConnectTimeout bounds the wait for the first session when
	// neither the URL (connect_timeout) nor URLOpener.ConnectTimeout says
	// otherwise.
	DefaultConnectTimeout = 10 * time.Second
)

// MinTTL is the shortest TTL the driver accepts (Capabilities().MinTTL):
// the portable layer's dlock.MinTTL. The driver adds no floor of its own:
// it enforces a lease with a local timer at the TTL's full resolution,
// without rounding. The longest TTL is the session timeout the server
// granted (Capabilities().MaxTTL; see the package documentation), a whole
// number of milliseconds of at most math.MaxInt32.
const MinTTL = dlock.MinTTL

func init() {
	dlock.Register(Scheme, &URLOpener{})
}

// Options configures a driver over a connection the application already
// has (NewClient, NewDriver), and holds URLOpener's defaults.
type Options struct {
	// Base is the path under which each key gets its node. Default
	// DefaultBase ("/dlock").
	Base string
	// ACL is the ACL of the nodes the driver creates. Default
	// zk.WorldACL(zk.PermAll).
	ACL []zk.ACL
	// SessionTimeout is the session timeout the connection's server granted
	// (the value passed to zk.Connect, unless the server clamped it). It is
	// the longest TTL the driver accepts (Capabilities().MaxTTL), in whole
	// milliseconds, rounded down; see the package documentation.
	// Required: the connection does not reveal it. It must be at least
	// MinTTL and at most math.MaxInt32 milliseconds (about 24.8 days, the
	// most ZooKeeper's protocol can carry); others are an error matching
	// dlock.ErrInvalidOption. A value larger than the granted timeout lets
	// the client trust a lock after its session may have expired.
	SessionTimeout time.Duration
}

// NewClient returns a dlock Client, configured by clientOpts, whose locks
// live under o.Base on conn. The Client does not close conn. Locks it holds
// when it is closed are left to their TTL (the driver deletes their nodes
// when it runs out). A nil conn or invalid o give an error matching
// dlock.ErrInvalidOption.
//
// conn keeps re-establishing itself: after a session expiry, locks of the
// old session report dlock.ErrLost and new locks use the new session.
func NewClient(conn *zk.Conn, o Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(conn, o)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// NewDriver returns the driver behind NewClient, for dlock.NewClient, tests
// and advanced use. It implements driver.Locker, driver.Queuer,
// driver.Notifier, driver.BatchRefresher, driver.Lister,
// driver.ForceReleaser, driver.SharedLocker and driver.MultiLocker. Closing
// the driver does not close conn. A nil conn or invalid o give an error
// matching dlock.ErrInvalidOption.
func NewDriver(conn *zk.Conn, o Options) (driver.Locker, error) {
	if conn == nil {
		return nil, fmt.Errorf("%w: zkdlock: nil *zk.Conn", driver.ErrInvalidOption)
	}
	if o.SessionTimeout <= 0 {
		return nil, fmt.Errorf("%w: zkdlock: Options.SessionTimeout is required (the session timeout the connection was granted)", driver.ErrInvalidOption)
	}
	if o.SessionTimeout < MinTTL {
		return nil, fmt.Errorf("%w: zkdlock: Options.SessionTimeout %v is below the shortest TTL, %v: no lock would fit in the session", driver.ErrInvalidOption, o.SessionTimeout, MinTTL)
	}
	if o.SessionTimeout.Milliseconds() > math.MaxInt32 {
		return nil, fmt.Errorf("%w: zkdlock: Options.SessionTimeout %v is longer than ZooKeeper can grant (%v)", driver.ErrInvalidOption, o.SessionTimeout, math.MaxInt32*time.Millisecond)
	}
	base, err := cleanBase(o.Base)
	if err != nil {
		return nil, err
	}
	acl := o.ACL
	if len(acl) == 0 {
		acl = zk.WorldACL(zk.PermAll)
	}
	d := newDriver(base, acl, conn.Server())
	d.conn = conn
	d.timeoutMs.Store(o.SessionTimeout.Milliseconds())
	return d, nil
}

// zkDriver implements driver.Locker and the optional interfaces NewDriver
// lists.
type zkDriver struct {
	conn      *zk.Conn
	ownConn   bool
	servers   string // for messages: host:port list, never credentials
	base      string
	acl       []zk.ACL
	timeoutMs atomic.Int64 // session timeout granted (or configured), ms

	mu       sync.Mutex
	closed   bool
	closeCh  chan struct{}
	held     map[holdKey]*holding
	keys     map[string]*keyHint    // key node path → what the driver remembers of it
	cleanups map[string]*time.Timer // key node path → pending clean-up
	bg       sync.WaitGroup         // background node clean-up

	// leaving: key node path → the removals of abandoned lock nodes
	// under way there (see goLeave). Guarded by mu.
	leaving map[string][]chan struct{}

	// watches: key node path → the release watch of the key (notify.go).
	// Guarded by mu.
	watches map[string]*zkWatch

	wakeups atomic.Int64 // watch notifications that woke a waiter
	armed   atomic.Int64 // predecessor watches an exclusive waiter has set
}

// holdKey names a grant of this driver: a token's exclusive lock of a key,
// or its share of it.
type holdKey struct {
	key, token string
	shared     bool
}

func newDriver(base string, acl []zk.ACL, servers string) *zkDriver {
	return &zkDriver{
		servers:  servers,
		base:     base,
		acl:      acl,
		closeCh:  make(chan struct{}),
		held:     map[holdKey]*holding{},
		keys:     map[string]*keyHint{},
		cleanups: map[string]*time.Timer{},
		leaving:  map[string][]chan struct{}{},
		watches:  map[string]*zkWatch{},
	}
}

func (d *zkDriver) sessionTimeout() time.Duration {
	return time.Duration(d.timeoutMs.Load()) * time.Millisecond
}

func (d *zkDriver) keyPath(key string) string { return Path(d.base, key) }

// dial connects a driver-owned connection and waits for its first session,
// to learn the session timeout the server grants.
func (o *URLOpener) dial(ctx context.Context, servers []string, base string, acl []zk.ACL, auth []byte, sessionTimeout, connectTimeout time.Duration) (*zkDriver, error) {
	d := newDriver(base, acl, strings.Join(servers, ","))
	d.ownConn = true
	up := make(chan struct{})
	var once sync.Once
	connOpts := options(zk.WithLogger(discardLogger{}))
	for _, opt := range o.ConnOptions {
		connOpts = append(connOpts, opt)
	}
	connOpts = append(connOpts,
		zk.WithDialer(d.dialer(o.Dialer)),
		zk.WithEventCallback(func(ev zk.Event) {
			if ev.Type == zk.EventSession && ev.State == zk.StateHasSession {
				once.Do(func() { close(up) })
			}
		}))
	conn, _, err := zk.Connect(servers, sessionTimeout, connOpts...)
	if err != nil {
		return nil, fmt.Errorf("%w: zookeeper %s: %v", driver.ErrUnavailable, d.servers, err)
	}
	d.conn = conn
	wctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	start := time.Now()
	select {
	case <-up:
	case <-wctx.Done():
		go conn.Close() // Close may wait a second for the server; do not hold Open up
		err := fmt.Errorf("%w: zookeeper %s: no session after %v", driver.ErrUnavailable, d.servers, time.Since(start).Round(time.Millisecond))
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, err
	}
	if d.timeoutMs.Load() == 0 { // not seen on the wire: trust the request
		d.timeoutMs.Store(sessionTimeout.Milliseconds())
	}
	if auth != nil {
		if _, err := call(wctx, func() (struct{}, error) { return struct{}{}, conn.AddAuth("digest", auth) }); err != nil {
			go conn.Close()
			return nil, d.wrap(wctx, "adding digest credentials", err)
		}
	}
	return d, nil
}

// options is its arguments as a slice of their type: zk.Connect's option
// type is not exported.
func options[T any](opts ...T) []T { return opts }

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

func (d *zkDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Backend: "zookeeper",
		Fencing: true,
		FIFO:    true,
		// A token re-acquires its lock only within the session that holds
		// it; another process cannot adopt an ephemeral node.
		ReacquireWithToken: false,
		MinTTL:             MinTTL,
		MaxTTL:             d.sessionTimeout(),
	}
}

func (d *zkDriver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// Close stops the driver. On an application's connection it first waits,
// up to 2 seconds in all, for the deletions of lock nodes whose waiters
// gave up that are still under way in the background. It then deletes the
// key nodes that were waiting for their idle clean-up. A driver-owned
// connection is then closed, which ends its session: ZooKeeper deletes
// every lock node it held at once. On an application's connection, locks
// still held keep their lease timers, which delete their nodes when the
// TTL runs out.
func (d *zkDriver) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	if !d.ownConn {
		d.awaitLeaves(ctx)
	}
	d.runCleanups(ctx)
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.closeCh)
	if d.ownConn {
		for _, h := range d.held {
			h.timer.Stop()
		}
	}
	d.mu.Unlock()
	if d.ownConn {
		d.conn.Close()
	}
	d.bg.Wait()
	return nil
}
