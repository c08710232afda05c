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

// MinTTL is the shortest TTL the driver accepts: etcd leases count whole
// seconds, and a TTL is rounded up to them.
const MinTTL = time.Second

// MaxTTL is the longest TTL the driver accepts: etcd's largest lease TTL
// (9e9 seconds, about 285 years, the portable maximum driver.MaxTTL). A
// longer one is an error matching ErrInvalidTTL.
const MaxTTL = 9_000_000_000 * time.Second

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
	txnOps atomic.Int64 // operations per transaction of RefreshBatch's checks

	mu       sync.Mutex
	closed   bool
	entries  map[entryID]*entry
	sweepAt  int                     // len(entries) at which remember sweeps
	pool     map[int64][]*lease      // idle leases of their own, by TTL
	shared   map[int64][]*lease      // shared leases, by TTL (shared.go)
	granting map[int64]chan struct{} // a shared lease being granted, by TTL
}

// entryID names a lock held through this driver.
type entryID struct{ key, token string }

// entry is a held lock: its etcd key, create revision (the fence) and the
// lease it is attached to.
type entry struct {
	name  string
	rev   int64
	value string
	// lease is the lease the key is attached to. After a Refresh that
	// needed a longer lease it is not the one whose ID the name carries.
	lease *lease
	// shared is the shared lease whose ID the name carries, for a lock
	// taken on a shared lease; nil for a lock taken on a lease of its own.
	shared *lease
	// busy serialises Refresh and Release of the entry (a watchdog refresh
	// may run while Unlock releases).
	busy chan struct{}
}

func newEntry(name string, rev int64, value string, l *lease) *entry {
	e := &entry{name: name, rev: rev, value: value, lease: l, busy: make(chan struct{}, 1)}
	if l.shared {
		e.shared = l
	}
	return e
}

func (e *entry) lock(ctx context.Context) error {
	select {
	case e.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *entry) unlock() { <-e.busy }

func newDriver(cli *clientv3.Client, own bool, addr string, cfg Config) (*etcdDriver, error) {
	if cfg.RequestTimeout < 0 {
		return nil, fmt.Errorf("%w: etcd: negative request timeout", driver.ErrInvalidOption)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Prefix == "" && !cfg.RawKeys {
		cfg.Prefix = DefaultPrefix
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &etcdDriver{
		cli:        cli,
		ownCli:     own,
		addr:       addr,
		prefix:     cfg.Prefix,
		raw:        cfg.RawKeys,
		reqTimeout: cfg.RequestTimeout,
		ctx:        ctx,
		cancel:     cancel,
		entries:    map[entryID]*entry{},
		sweepAt:    minSweep,
		pool:       map[int64][]*lease{},
		shared:     map[int64][]*lease{},
		granting:   map[int64]chan struct{}{},
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
		Fencing: true,
		FIFO:    true,
		MinTTL:  MinTTL,
		MaxTTL:  MaxTTL,
	}
}

// Acquire takes key only if its queue is empty, in one transaction that adds
// the entry only when no other entry exists.
func (d *etcdDriver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	if err := d.check(ctx); err != nil {
		return driver.Result{}, err
	}
	pfx := d.queuePrefix(req.Key)
	for attempt := 0; ; attempt++ {
		l, name, reused, err := d.leaseFor(ctx, req, pfx)
		if err != nil {
			return driver.Result{}, err
		}
		var renewed <-chan error
		if reused && needsRenew(l, req.TTL) {
			renewed = d.renewLeaseAsync(ctx, l, time.Now().Add(-req.TTL/50))
		}
		rctx, cancel := d.rpcCtx(ctx)
		resp, err := d.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(pfx+"/"), "=", 0).WithPrefix()).
			Then(clientv3.OpPut(name, req.Metadata, clientv3.WithLease(l.id))).
			Commit()
		cancel()
		var rerr error
		if renewed != nil {
			rerr = <-renewed
		}
		if isLeaseNotFound(err) || isLeaseNotFound(rerr) {
			// A reused lease ran out: whatever it held is gone. Try
			// once more with a new lease.
			d.leaseGone(l, name)
			if attempt == 0 {
				continue
			}
			return driver.Result{}, d.fail(ctx, "acquire", errLeaseGone)
		}
		if err != nil {
			// The entry may or may not have been written.
			d.discard(l, name, 0)
			return driver.Result{}, d.fail(ctx, "acquire", err)
		}
		if !resp.Succeeded {
			if rerr == nil || l.shared {
				d.giveBack(l, name)
			}
			return driver.Result{}, nil
		}
		if rerr != nil {
			// The lease's validity is unknown: do not grant on it.
			d.discard(l, name, resp.Header.Revision)
			return driver.Result{}, rerr
		}
		e := newEntry(name, resp.Header.Revision, req.Metadata, l)
		d.remember(req.Key, req.Token, e)
		return driver.Result{Acquired: true, Fence: uint64(e.rev), ValidUntil: l.validUntil(req.TTL)}, nil
	}
}

// needsRenew reports whether a pooled lease needs a keep-alive before it
// backs a grant of ttl: when its last confirmation is older than 2% of ttl,
// so that a grant's validity is never more than that short of the full TTL.
func needsRenew(l *lease, ttl time.Duration) bool {
	return time.Since(l.confirmedAt()) >= ttl/50
}

func (d *etcdDriver) remember(key, token string, e *entry) {
	var revoke []*lease
	d.mu.Lock()
	id := entryID{key, token}
	if old := d.entries[id]; old != nil && old != e && d.dropLocked(old, false) {
		revoke = append(revoke, old.shared)
	}
	d.entries[id] = e
	if len(d.entries) >= d.sweepAt {
		// Locks lost without a later Unlock would stay here forever:
		// drop those whose lease has certainly run out on the server.
		for id, e := range d.entries {
			if time.Since(e.lease.confirmedAt()) > time.Duration(e.lease.sec)*time.Second+time.Minute {
				delete(d.entries, id)
				if d.dropLocked(e, false) {
					revoke = append(revoke, e.shared)
				}
			}
		}
		d.sweepAt = max(minSweep, 2*len(d.entries))
	}
	d.mu.Unlock()
	for _, l := range revoke {
		d.revokeAsync(l)
	}
}

// minSweep is the number of remembered locks from which remember looks for
// long-expired ones.
const minSweep = 256

func (d *etcdDriver) lookup(key, token string) *entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.entries[entryID{key, token}]
}

// forget drops a lock that was lost, or whose entry may be left behind,
// from the driver's memory.
func (d *etcdDriver) forget(key, token string, e *entry) { d.drop(key, token, e, false) }

// drop drops a lock from the driver's memory. For a lock taken on a shared
// lease it gives back the lock's reference to that lease (while the entry
// is still attached to it) and frees the entry name when deleted is set
// (its deletion was confirmed), else burns it.
func (d *etcdDriver) drop(key, token string, e *entry, deleted bool) {
	revoke := false
	d.mu.Lock()
	if d.entries[entryID{key, token}] == e {
		delete(d.entries, entryID{key, token})
		revoke = d.dropLocked(e, deleted)
	}
	d.mu.Unlock()
	if revoke {
		d.revokeAsync(e.shared)
	}
}

// dropLocked does drop's work on the shared lease of e, which is no longer
// remembered; d.mu is held. It reports whether that lease should be revoked.
func (d *etcdDriver) dropLocked(e *entry, deleted bool) bool {
	if e.shared == nil {
		return false
	}
	if e.lease == e.shared {
		return d.unshareLocked(e.shared, e.name, !deleted)
	}
	d.nameLocked(e.shared, e.name, !deleted)
	return false
}

// giveBack returns the lease of an attempt that wrote no entry: to the
// pool, or to the shared lease's list with the entry name freed.
func (d *etcdDriver) giveBack(l *lease, name string) {
	if l.shared {
		d.unshare(l, name, false)
		return
	}
	d.putBack(l)
}

// discard gives up the lease of an attempt that may have left an entry of
// name (created at rev, when known) that nobody holds. A lease of its own
// is revoked, which removes the entry; on a shared lease the name is burned
// and the entry deleted in the background.
func (d *etcdDriver) discard(l *lease, name string, rev int64) {
	if !l.shared {
		d.revokeAsync(l)
		return
	}
	d.unshare(l, name, true)
	d.deleteAsync(name, rev, l, nil)
}

// leaseGone records that the server no longer knows the lease l of an
// attempt: every entry on it is gone.
func (d *etcdDriver) leaseGone(l *lease, name string) {
	l.markLost()
	if l.shared {
		d.unshare(l, name, true)
	}
}

// leaseOf returns the lease e is attached to now.
func (d *etcdDriver) leaseOf(e *entry) *lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	return e.lease
}

// owned is the comparison that holds while the entry is ours: the same
// incarnation of the key (create revision) on our lease l. A retried
// release can never delete a newer lock.
func (e *entry) owned(l *lease) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(e.name), "=", e.rev),
		clientv3.Compare(clientv3.LeaseValue(e.name), "=", l.id),
	}
}

// Refresh confirms that the lock is still ours and keeps its lease alive: a
// keep-alive and a check of the key, in parallel. When the TTL needs a
// longer lease, the key moves to a new lease (its create revision, and so
// its fence and queue position, stay).
func (d *etcdDriver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	start := time.Now()
	if err := d.check(ctx); err != nil {
		return err
	}
	e := d.lookup(key, token)
	if e == nil {
		return fmt.Errorf("%w: %q is not held by this token on this client", driver.ErrNotHeld, key)
	}
	if err := e.lock(ctx); err != nil {
		return err
	}
	defer e.unlock()
	if d.lookup(key, token) != e {
		// Released (or lost) by a call that held the entry before us.
		return fmt.Errorf("%w: %q is not held by this token on this client", driver.ErrNotHeld, key)
	}
	l := d.leaseOf(e)
	if l.isLost() {
		d.forget(key, token, e)
		return fmt.Errorf("%w: %q: its lease expired or was revoked", driver.ErrNotHeld, key)
	}
	if sec := leaseSeconds(ttl); sec > l.sec {
		return d.moveLease(ctx, key, token, e, l, sec)
	}
	renewed := d.renewLeaseAsync(ctx, l, start)
	rctx, cancel := d.rpcCtx(ctx)
	// The Get makes the check linearizable: etcd serves a transaction
	// without operations as a serializable read, from a member that may
	// not have applied our own latest write yet.
	resp, err := d.cli.Txn(rctx).If(e.owned(l)...).Then(clientv3.OpGet(e.name, clientv3.WithCountOnly())).Commit()
	cancel()
	rerr := <-renewed
	if errors.Is(rerr, errLeaseGone) {
		d.forget(key, token, e)
		return fmt.Errorf("%w: %q: its lease expired or was revoked", driver.ErrNotHeld, key)
	}
	if err != nil {
		return d.fail(ctx, "refresh", err)
	}
	if !resp.Succeeded {
		d.forget(key, token, e)
		return fmt.Errorf("%w: %q: the key is gone or belongs to another lease", driver.ErrNotHeld, key)
	}
	return rerr
}

func (d *etcdDriver) moveLease(ctx context.Context, key, token string, e *entry, old *lease, sec int64) error {
	nl, err := d.grant(ctx, sec)
	if err != nil {
		return err
	}
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).If(e.owned(old)...).
		Then(clientv3.OpPut(e.name, e.value, clientv3.WithLease(nl.id))).
		Commit()
	cancel()
	if err != nil {
		d.revokeAsync(nl)
		return d.fail(ctx, "refresh", err)
	}
	if !resp.Succeeded {
		d.revokeAsync(nl)
		d.forget(key, token, e)
		return fmt.Errorf("%w: %q: the key is gone or belongs to another lease", driver.ErrNotHeld, key)
	}
	revoke := !old.shared // it holds nothing now
	d.mu.Lock()
	e.lease = nl
	if old.shared && d.unshareLocked(old, "", false) {
		revoke = true
	}
	d.mu.Unlock()
	if revoke {
		d.revokeAsync(old)
	}
	return nil
}

// Release deletes the lock's key if it is still the same incarnation on our
// lease. The lease then holds nothing and goes back to the pool.
func (d *etcdDriver) Release(ctx context.Context, key, token string) error {
	if err := d.check(ctx); err != nil {
		return err
	}
	e := d.lookup(key, token)
	if e == nil {
		return fmt.Errorf("%w: %q is not held by this token on this client", driver.ErrNotHeld, key)
	}
	if err := e.lock(ctx); err != nil {
		return err
	}
	defer e.unlock()
	if d.lookup(key, token) != e {
		// Released (or lost) by a call that held the entry before us.
		return fmt.Errorf("%w: %q is not held by this token on this client", driver.ErrNotHeld, key)
	}
	l := d.leaseOf(e)
	if l.isLost() {
		d.forget(key, token, e)
		return fmt.Errorf("%w: %q: its lease expired or was revoked", driver.ErrNotHeld, key)
	}
	// A plain delete of the entry's name is owner-checked by construction,
	// as in concurrency.Mutex.Unlock: the name carries the ID of a lease of
	// ours, which etcd does not hand out again, and this driver puts a
	// lease back in its pool, for a new entry of the same name, only after
	// the previous entry's deletion was confirmed and forgotten (above,
	// under the entry's lock). So the name can only be this lock's entry,
	// or gone. It costs one write, like the Mutex; a transaction comparing
	// the create revision costs noticeably more in etcd.
	//
	// When etcd is slow to answer — typically a write proposed just as
	// the leader died, which etcd reports only after its own request
	// timeout of about 5 s — revoking the lease in the background as
	// well frees the key as soon as a new leader is up, instead of when
	// the lease runs out.
	//
	// On a shared lease the name is reused for a new entry of the same
	// queue only after the deletion was confirmed, and never once a delete
	// of it had an unknown outcome (the name is burned); the entry left
	// behind is then deleted in the background, owner-checked by its
	// create revision, instead of revoking the lease other locks use.
	cleanup := func() { d.revokeAsync(l, func() { d.forget(key, token, e) }) }
	if l.shared {
		cleanup = func() { d.leftBehind(key, token, e, l) }
	}
	hedge := time.AfterFunc(hedgeAfter, cleanup)
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Delete(rctx, e.name)
	cancel()
	hedged := !hedge.Stop()
	if err != nil {
		// The delete may or may not have happened. Revoking the lease
		// (or, on a shared lease, deleting the entry) frees the key
		// either way; it is tried in the background until the lease
		// would have expired anyway (nobody keeps it alive), or is gone.
		// A later Unlock finds the lease gone.
		if !hedged {
			cleanup()
		}
		return d.fail(ctx, "release", err)
	}
	d.drop(key, token, e, !hedged)
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: %q: the key is gone (expired, revoked or deleted)", driver.ErrNotHeld, key)
	}
	if !l.shared {
		d.putBack(l)
	}
	return nil
}

// leftBehind deals with the entry of a lock on the shared lease l whose
// delete had an unknown outcome: its name is burned at once, and the entry,
// if it is still there, deleted in the background (owner-checked by its
// create revision); the lock is forgotten when that is done.
func (d *etcdDriver) leftBehind(key, token string, e *entry, l *lease) {
	d.mu.Lock()
	d.nameLocked(e.shared, e.name, true)
	d.mu.Unlock()
	d.deleteAsync(e.name, e.rev, l, func() { d.forget(key, token, e) })
}

// Inspect reads the queue: its first entry is the holder.
func (d *etcdDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	if err := d.check(ctx); err != nil {
		return driver.Info{}, err
	}
	pfx := d.queuePrefix(key) + "/"
	rctx, cancel := d.rpcCtx(ctx)
	defer cancel()
	resp, err := d.cli.Get(rctx, pfx, clientv3.WithFirstCreate()...)
	if err != nil {
		return driver.Info{}, d.fail(ctx, "inspect", err)
	}
	if len(resp.Kvs) == 0 {
		return driver.Info{Waiters: 0}, nil
	}
	kv := resp.Kvs[0]
	in := driver.Info{
		Held:     true,
		Fence:    uint64(kv.CreateRevision),
		Metadata: string(kv.Value),
		Waiters:  int(resp.Count) - 1,
	}
	if kv.Lease != 0 {
		tr, err := d.cli.TimeToLive(rctx, clientv3.LeaseID(kv.Lease))
		if err != nil {
			return driver.Info{}, d.fail(ctx, "inspect", err)
		}
		if tr.TTL > 0 {
			in.TTL = time.Duration(tr.TTL) * time.Second
		}
	}
	return in, nil
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
