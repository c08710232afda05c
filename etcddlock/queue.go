package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

// errWatchBroken reports a watch that ended without the awaited event (the
// member lost its leader, history was compacted, the stream broke): the
// waiter checks the queue again.
var errWatchBroken = errors.New("watch ended")

// AcquireQueued joins key's queue and waits for its turn, the way
// concurrency.Mutex.Lock does: one transaction reads the last entry (the
// predecessor) and appends ours; then the waiter watches only the
// predecessor's deletion, and after it checks, in one read, that its own
// entry still exists and which entry now precedes it. A release therefore
// wakes exactly one waiter.
//
// While waiting the entry's lease is kept alive. If the lease expires or the
// entry is deleted meanwhile, the waiter notices (the keep-alive fails, or
// the check finds its entry gone) and joins again at the back; it never
// reports a grant on an entry it lost. When ctx ends it deletes its entry
// before returning.
func (d *etcdDriver) AcquireQueued(ctx context.Context, req driver.Request) (driver.Result, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return driver.Result{}, driver.ErrClosed
	}
	d.active.Add(1)
	d.mu.Unlock()
	defer d.active.Done()
	if err := ctx.Err(); err != nil {
		return driver.Result{}, err
	}
	// Close ends the wait too.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.ctx, cancel)()

	pfx := d.queuePrefix(req.Key)
	sec := leaseSeconds(req.TTL)
	pause := 10 * time.Millisecond
	for {
		res, again, err := d.queue(wctx, req, pfx, sec)
		if !again {
			if err != nil {
				err = d.waitErr(ctx, err)
			}
			return res, err
		}
		// Our entry vanished while we waited: join again, at the back.
		select {
		case <-wctx.Done():
			return driver.Result{}, d.waitErr(ctx, wctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// waitErr makes the error of an ended wait match the caller's ctx.Err(),
// or driver.ErrClosed when Close ended it.
func (d *etcdDriver) waitErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(err, cerr) {
			return err
		}
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	if d.ctx.Err() != nil {
		return driver.ErrClosed
	}
	return err
}

// queue makes one pass: join, wait, and either return a grant or an error,
// or report again when the entry was lost while waiting.
func (d *etcdDriver) queue(ctx context.Context, req driver.Request, pfx string, sec int64) (res driver.Result, again bool, err error) {
	l, pooled, err := d.takeLease(ctx, sec)
	if err != nil {
		return res, false, err
	}
	name := entryName(pfx, l.id)
	var renewed <-chan error
	if pooled && needsRenew(l, req.TTL) {
		renewed = d.renewAsync(ctx, l)
	}
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(name), "=", 0)).
		Then(
			clientv3.OpGet(pfx+"/", clientv3.WithLastCreate()...),
			clientv3.OpPut(name, req.Metadata, clientv3.WithLease(l.id)),
		).
		Commit()
	cancel()
	if renewed != nil {
		// A transport error here is settled by the validity check
		// before the grant.
		if rerr := <-renewed; errors.Is(rerr, errLeaseGone) {
			return res, true, nil
		}
	}
	switch {
	case isLeaseNotFound(err):
		l.markLost()
		return res, true, nil
	case err != nil:
		// The entry may or may not exist: revoking the lease removes it.
		d.revokeAsync(l)
		return res, false, d.fail(ctx, "join queue", err)
	case !resp.Succeeded:
		// The name is taken, which only a stale entry of ours can do.
		d.revokeAsync(l)
		return res, true, nil
	}
	myRev := resp.Header.Revision
	rev := resp.Header.Revision
	pred := resp.Responses[0].GetResponseRange().Kvs

	if len(pred) > 0 {
		kctx, stopKA := context.WithCancel(ctx)
		lost := make(chan struct{})
		kaDone := make(chan struct{})
		go func() {
			defer close(kaDone)
			d.keepAlive(kctx, l, req.TTL/3, lost)
		}()
		again, err = d.waitTurn(ctx, name, pfx, myRev, rev, string(pred[0].Key), lost)
		stopKA()
		<-kaDone
		if err != nil {
			d.abandon(name, myRev, l)
			if errors.Is(err, errAbandon) {
				err = ctx.Err()
			}
			return res, false, err
		}
		if again {
			// Our entry is gone; so may be the lease. Never reuse it.
			d.revokeAsync(l)
			return res, true, nil
		}
	}

	// Our turn. The grant is valid only while the lease is: renew it
	// first when its last confirmation is too old to give a useful
	// validity.
	if time.Until(l.validUntil(req.TTL)) < req.TTL/2 {
		if err := d.renew(ctx, l); err != nil {
			if errors.Is(err, errLeaseGone) {
				return res, true, nil
			}
			d.abandon(name, myRev, l)
			return res, false, err
		}
	}
	d.remember(req.Key, req.Token, newEntry(name, myRev, req.Metadata, l))
	return driver.Result{Acquired: true, Fence: uint64(myRev), ValidUntil: l.validUntil(req.TTL)}, false, nil
}

// errAbandon reports that ctx ended while waiting: the entry must go.
var errAbandon = errors.New("wait abandoned")

// waitTurn waits until no entry with a smaller create revision than myRev
// is left in the queue. pred is the entry just before ours as of revision
// rev.
func (d *etcdDriver) waitTurn(ctx context.Context, name, pfx string, myRev, rev int64, pred string, lost <-chan struct{}) (again bool, err error) {
	pause := 20 * time.Millisecond
	for {
		werr := d.waitDelete(ctx, pred, name, rev, lost)
		if ctx.Err() != nil {
			return false, errAbandon
		}
		if errors.Is(werr, errLeaseGone) {
			return true, nil
		}
		if errors.Is(werr, errWatchBroken) {
			if !sleepCtx(ctx, pause) {
				return false, errAbandon
			}
			pause = min(2*pause, time.Second)
		}
		rctx, cancel := d.rpcCtx(ctx)
		resp, err := d.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(name), "=", myRev)).
			Then(clientv3.OpGet(pfx+"/", append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(myRev-1))...)).
			Commit()
		cancel()
		switch {
		case ctx.Err() != nil:
			return false, errAbandon
		case err != nil && !unavailable(err):
			return false, d.fail(ctx, "check queue", err)
		case err != nil:
			// etcd is unreachable or electing: look again soon. The
			// watch from the same revision replays a deletion we missed.
			if !sleepCtx(ctx, pause) {
				return false, errAbandon
			}
			pause = min(2*pause, time.Second)
			continue
		case !resp.Succeeded:
			// Our entry is gone: the lease expired or someone deleted
			// it. Never a grant on it.
			return true, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return false, nil
		}
		pred, rev = string(kvs[0].Key), resp.Header.Revision
		pause = 20 * time.Millisecond
	}
}

// waitDelete waits for the deletion of key (the predecessor) after
// revision rev. It returns nil on that deletion; errLeaseGone when lost
// closes or our own entry own is deleted; errWatchBroken when a watch ends
// otherwise; or ctx.Err().
func (d *etcdDriver) waitDelete(ctx context.Context, key, own string, rev int64, lost <-chan struct{}) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Both watches share the client's one watch stream.
	wch := d.cli.Watch(wctx, key, clientv3.WithRev(rev+1), clientv3.WithFilterPut())
	och := d.cli.Watch(wctx, own, clientv3.WithRev(rev+1), clientv3.WithFilterPut())
	for {
		select {
		case <-lost:
			return errLeaseGone
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil || wr.Canceled {
				return errWatchBroken
			}
			if deleted(wr) {
				return nil
			}
		case wr, ok := <-och:
			if !ok || wr.Err() != nil || wr.Canceled {
				return errWatchBroken
			}
			if deleted(wr) {
				return errLeaseGone
			}
		}
	}
}

func deleted(wr clientv3.WatchResponse) bool {
	for _, ev := range wr.Events {
		if ev.Type == mvccpb.DELETE {
			return true
		}
	}
	return false
}

// abandon deletes our queue entry after the wait ended, so that the key is
// free for others at once. When etcd cannot be reached it does not wait:
// nobody keeps the lease alive, so the entry goes when the lease expires.
func (d *etcdDriver) abandon(name string, myRev int64, l *lease) {
	del := func(ctx context.Context) bool {
		resp, err := d.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(name), "=", myRev)).
			Then(clientv3.OpDelete(name)).
			Commit()
		return err == nil && resp.Succeeded
	}
	if d.connDown() {
		d.revokeAsync(l)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if del(ctx) {
		d.putBack(l)
		return
	}
	d.revokeAsync(l)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
