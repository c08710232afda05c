package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/dlock-go/dlock/driver"
)

// cleanupTimeout bounds the removal of a queue entry after the caller's
// context ended, and other best-effort clean-up.
const cleanupTimeout = 3 * time.Second

// hedgeAfter is how long Release waits for etcd before it also revokes the
// lock's lease in the background.
const hedgeAfter = time.Second

// MinTTL is the shortest TTL the driver accepts (Capabilities().MinTTL):
// etcd leases count whole seconds, and a TTL is rounded up to them.
const MinTTL = time.Second

// MaxTTL is the longest TTL the driver accepts (Capabilities().MaxTTL):
// etcd's largest lease TTL, 9e9 seconds (about 285 years), which is the
// portable maximum driver.MaxTTL. dlock refuses a TTL outside [MinTTL,
// MaxTTL] with an error matching ErrInvalidTTL before the driver sees it.
const MaxTTL = driver.MaxTTL

type etcdDriver struct {
	cli        *clientv3.Client
	ownCli     bool
	addr       string
	prefix     string
	raw        bool
	reqTimeout time.Duration

	ctx    context.Context // cancelled by Close: ends waits in queues
	cancel context.CancelFunc
	active sync.WaitGroup // AcquireQueued calls in progress
	bg     sync.WaitGroup // background revokes
	ka     keepAliver
	txnOps atomic.Int64  // operations per transaction of RefreshBatch's checks
	seq    atomic.Uint64 // makes the entry names of readers' shares unique

	mu       sync.Mutex
	closed   bool
	entries  map[entryID]*entry
	sweepAt  int                     // len(entries) at which remember sweeps
	pool     map[int64][]*lease      // idle leases of their own, by TTL
	shared   map[int64][]*lease      // shared leases, by TTL (shared.go)
	granting map[int64]chan struct{} // a shared lease being granted, by TTL

	wmu     sync.Mutex
	watches map[string]*watchGroup // release watches by key (notify.go)
}

func newDriver(cli *clientv3.Client, own bool, addr string, opts Options) (*etcdDriver, error) {
	if opts.RequestTimeout < 0 {
		return nil, fmt.Errorf("%w: etcd: negative request timeout", driver.ErrInvalidOption)
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Prefix == "" && !opts.RawKeys {
		opts.Prefix = DefaultPrefix
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &etcdDriver{
		cli:        cli,
		ownCli:     own,
		addr:       addr,
		prefix:     opts.Prefix,
		raw:        opts.RawKeys,
		reqTimeout: opts.RequestTimeout,
		ctx:        ctx,
		cancel:     cancel,
		entries:    map[entryID]*entry{},
		sweepAt:    minSweep,
		pool:       map[int64][]*lease{},
		shared:     map[int64][]*lease{},
		granting:   map[int64]chan struct{}{},
		watches:    map[string]*watchGroup{},
	}
	d.ka.d = d
	d.txnOps.Store(defaultTxnOps)
	return d, nil
}

func (d *etcdDriver) check(ctx context.Context) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return driver.ErrClosed
	}
	return ctx.Err()
}

// rpcCtx bounds one request by the request timeout.
func (d *etcdDriver) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.reqTimeout)
}

// fail wraps an error from etcd. Errors that say the cluster could not be
// reached or did not answer (in time) match driver.ErrUnavailable; all name
// the endpoints; an error caused by the end of ctx matches ctx.Err().
func (d *etcdDriver) fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(cerr, context.Canceled) && d.ctx.Err() != nil {
			return driver.ErrClosed
		}
		// The caller's deadline passed while etcd had not answered: that
		// is unavailability too, as is a request cut short on a
		// connection that is down.
		if errors.Is(cerr, context.DeadlineExceeded) || d.connDown() {
			return fmt.Errorf("%w: etcd %s: %s: no answer: %w", driver.ErrUnavailable, d.addr, op, cerr)
		}
		return fmt.Errorf("etcd %s: %s: %w", d.addr, op, cerr)
	}
	if unavailable(err) {
		return fmt.Errorf("%w: etcd %s: %s: %v", driver.ErrUnavailable, d.addr, op, err)
	}
	return fmt.Errorf("etcd %s: %s: %w", d.addr, op, err)
}

// connDown reports whether the client has no working connection.
func (d *etcdDriver) connDown() bool {
	conn := d.cli.ActiveConnection()
	if conn == nil {
		return true
	}
	return conn.GetState() != connectivity.Ready
}

func unavailable(err error) bool {
	code := codes.Unknown
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	}
	switch code {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.NotFound, codes.OutOfRange, codes.AlreadyExists:
		return false
	}
	return true
}

// queuePrefix is the etcd key prefix of key's queue, without the trailing
// "/": the prefix concurrency.NewMutex gets.
func (d *etcdDriver) queuePrefix(key string) string {
	if d.raw {
		return d.prefix + key
	}
	return d.prefix + escapeKey(key)
}

func (d *etcdDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Backend: "etcd",
		Fencing: true,
		FIFO:    true,
		MinTTL:  MinTTL,
		MaxTTL:  MaxTTL,
	}
}

// Close ends waits in queues (each removes its entry), revokes idle leases
// and closes the etcd client if the driver opened it. Held locks are left
// to their leases, which nobody keeps alive any more.
func (d *etcdDriver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	var idle []*lease
	for _, stack := range d.pool {
		idle = append(idle, stack...)
	}
	d.pool = map[int64][]*lease{}
	d.mu.Unlock()
	d.cancel()
	d.active.Wait()
	// Shared leases no held lock uses any more (with a dlock.Client, all:
	// it releases its locks first) are revoked too, which also removes
	// entries left behind on them.
	d.mu.Lock()
	for _, list := range d.shared {
		for _, l := range list {
			if l.refs == 0 && !l.isLost() {
				idle = append(idle, l)
			}
		}
	}
	d.shared = map[int64][]*lease{}
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	var wg sync.WaitGroup
	for _, l := range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = d.cli.Revoke(ctx, l.id)
		}()
	}
	wg.Wait()
	cancel()
	d.bg.Wait()
	if d.ownCli {
		return d.cli.Close()
	}
	return nil
}
