package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

// Refresh confirms that the lock is still ours and keeps its lease alive: a
// keep-alive and a check of the key, in parallel. When the TTL needs a
// longer lease, the key moves to a new lease (its create revision, and so
// its fence and queue position, stay).
func (d *etcdDriver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	start := time.Now()
	e, l, err := d.held(ctx, key, token)
	if err != nil {
		return err
	}
	defer e.unlock()
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

// held finds the lock of key and token, for Refresh and Release, and locks
// its entry (the caller unlocks it) against other calls on the same lock.
// It returns the entry and its lease, or an error: ErrClosed or ctx's when
// the driver closed or ctx ended, one matching ErrNotHeld when this driver
// does not hold key with token (any more: a call that held the entry first
// released or lost it), or the lock's lease expired or was revoked (the
// lock is then forgotten).
func (d *etcdDriver) held(ctx context.Context, key, token string) (*entry, *lease, error) {
	if err := d.check(ctx); err != nil {
		return nil, nil, err
	}
	e := d.lookup(key, token)
	if e == nil {
		return nil, nil, fmt.Errorf("%w: %q is not held by this token on this client", driver.ErrNotHeld, key)
	}
	if err := e.lock(ctx); err != nil {
		return nil, nil, err
	}
	if d.lookup(key, token) != e {
		e.unlock()
		return nil, nil, fmt.Errorf("%w: %q is not held by this token on this client", driver.ErrNotHeld, key)
	}
	l := d.leaseOf(e)
	if l.isLost() {
		d.forget(key, token, e)
		e.unlock()
		return nil, nil, fmt.Errorf("%w: %q: its lease expired or was revoked", driver.ErrNotHeld, key)
	}
	return e, l, nil
}

// moveLease attaches the lock's key to a new lease of sec seconds, when the
// one it is on (old) is too short for the TTL asked, as long as the key is
// still ours on old; old is then released (revoked or unshared).
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
	e, l, err := d.held(ctx, key, token)
	if err != nil {
		return err
	}
	defer e.unlock()
	if e.share {
		return d.releaseShare(ctx, key, token, e, l)
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
