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

// AcquireQueued joins key's queue and waits for its turn, in the queue
// concurrency.Mutex.Lock uses: one transaction reads the last entry (the
// predecessor) and appends ours. The waiter then watches only the
// predecessor's deletion (and its own entry's), and checks, in one read,
// that its own entry still exists and which entry now precedes it: once
// after the watches are in place and again after each deletion. A release
// therefore wakes exactly one waiter.
//
// While waiting the entry's lease is kept alive. If the lease expires or the
// entry is deleted meanwhile, the waiter notices (the keep-alive fails, its
// entry's deletion arrives, or the check finds it gone) and joins again at
// the back; it never reports a grant on an entry it lost. When ctx ends it
// deletes its entry before returning.
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
	pause := 10 * time.Millisecond
	for {
		res, again, err := d.queue(wctx, req, pfx)
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
func (d *etcdDriver) queue(ctx context.Context, req driver.Request, pfx string) (res driver.Result, again bool, err error) {
	l, name, reused, err := d.leaseFor(ctx, req, pfx)
	if err != nil {
		return res, false, err
	}
	var renewed <-chan error
	if reused && needsRenew(l, req.TTL) {
		renewed = d.renewLeaseAsync(ctx, l, time.Now().Add(-req.TTL/50))
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
			d.leaseGone(l, name)
			return res, true, nil
		}
	}
	switch {
	case isLeaseNotFound(err):
		d.leaseGone(l, name)
		return res, true, nil
	case err != nil:
		// The entry may or may not exist: revoking the lease (or
		// deleting the entry on a shared lease) removes it.
		d.discard(l, name, 0)
		return res, false, d.fail(ctx, "join queue", err)
	case !resp.Succeeded:
		// The name is taken, which only a stale entry of ours can do.
		d.discard(l, name, 0)
		return res, true, nil
	}
	myRev := resp.Header.Revision
	pred := resp.Responses[0].GetResponseRange().Kvs

	if len(pred) > 0 {
		kctx, stopKA := context.WithCancel(ctx)
		lost := make(chan struct{})
		kaDone := make(chan struct{})
		go func() {
			defer close(kaDone)
			d.keepAlive(kctx, l, req.TTL/3, lost)
		}()
		again, err = d.waitTurn(ctx, name, pfx, myRev, string(pred[0].Key), lost)
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
			// Our entry is gone; so may be the lease. Never reuse a
			// lease of its own; a shared one, which other locks use,
			// is dropped by them if it is gone.
			if l.shared {
				d.unshare(l, name, true)
			} else {
				d.revokeAsync(l)
			}
			return res, true, nil
		}
	}

	// Our turn. The grant is valid only while the lease is: renew it
	// first when its last confirmation is too old to give a useful
	// validity.
	if time.Until(l.validUntil(req.TTL)) < req.TTL/2 {
		if err := d.renewLease(ctx, l, time.Now()); err != nil {
			if errors.Is(err, errLeaseGone) {
				d.leaseGone(l, name)
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
// is left in the queue. pred is the entry just before ours when we joined.
//
// Every watch starts at the current revision, so etcd delivers its events
// at once (a watch from a past revision is served by etcd's catch-up loop,
// up to 100 ms late). A deletion between our last read and the watch's
// start is caught by the check that follows each watch's creation.
func (d *etcdDriver) waitTurn(ctx context.Context, name, pfx string, myRev int64, pred string, lost <-chan struct{}) (again bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	var (
		own     clientv3.WatchChan // deletion of our own entry
		pw      clientv3.WatchChan // deletion of the predecessor
		ocancel = func() {}
		pcancel = func() {}
		watched string
	)
	defer func() { ocancel(); pcancel() }()
	pause := 20 * time.Millisecond
	backoff := func() bool {
		ok := sleepCtx(ctx, pause)
		pause = min(2*pause, time.Second)
		return ok
	}
	for {
		if own == nil {
			ocancel()
			octx, oc := context.WithCancel(wctx)
			own, ocancel = d.cli.Watch(octx, name, clientv3.WithFilterPut(), clientv3.WithCreatedNotify()), oc
			if err := awaitCreated(ctx, own); err != nil {
				own = nil
				if ctx.Err() != nil || !backoff() {
					return false, errAbandon
				}
				continue
			}
		}
		if pred != watched {
			pcancel()
			pctx, pc := context.WithCancel(wctx)
			pw, pcancel, watched = d.cli.Watch(pctx, pred, clientv3.WithFilterPut(), clientv3.WithCreatedNotify()), pc, pred
			if err := awaitCreated(ctx, pw); err != nil {
				watched = ""
				if ctx.Err() != nil || !backoff() {
					return false, errAbandon
				}
				continue
			}
		}
		// Is our entry still there, and which entry is now just before
		// it? One linearizable read, after the watches were in place.
		rctx, rcancel := d.rpcCtx(ctx)
		resp, err := d.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(name), "=", myRev)).
			Then(clientv3.OpGet(pfx+"/", append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(myRev-1))...)).
			Commit()
		rcancel()
		switch {
		case ctx.Err() != nil:
			return false, errAbandon
		case err != nil && !unavailable(err):
			return false, d.fail(ctx, "check queue", err)
		case err != nil:
			// etcd is unreachable or electing: look again soon.
			if !backoff() {
				return false, errAbandon
			}
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
		if pred = string(kvs[0].Key); pred != watched {
			continue // a waiter ahead of us left: watch the new predecessor
		}
		pause = 20 * time.Millisecond
		switch werr := waitDeleted(ctx, pw, own, lost, myRev); {
		case ctx.Err() != nil:
			return false, errAbandon
		case errors.Is(werr, errLeaseGone):
			return true, nil
		case errors.Is(werr, errWatchBroken):
			own, watched = nil, ""
			if !backoff() {
				return false, errAbandon
			}
		}
		// The predecessor is gone (or a watch broke): check again.
	}
}

// awaitCreated waits for the response that confirms a watch's creation.
func awaitCreated(ctx context.Context, wch clientv3.WatchChan) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case wr, ok := <-wch:
		if !ok || wr.Err() != nil || wr.Canceled || !wr.Created {
			return errWatchBroken
		}
		return nil
	}
}

// waitDeleted waits for a deletion on pw (the predecessor). It returns nil
// on that deletion; errLeaseGone when lost closes or own reports our own
// entry's deletion; errWatchBroken when a watch ends; or ctx.Err().
//
// Only deletions after myRev count. Both entries existed at myRev, but a
// watch starts at the current revision of the member that serves it, and a
// follower may lag behind: it can then deliver the deletion of an earlier
// entry of the same name (a client's entries are named after its lease, so
// its last term's entry has our entry's name). Taken for our own, that
// deletion sent the waiter to the back of the queue while the entry it
// left behind was, to everyone else, the leader.
func waitDeleted(ctx context.Context, pw, own clientv3.WatchChan, lost <-chan struct{}, myRev int64) error {
	for {
		select {
		case <-lost:
			return errLeaseGone
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok := <-pw:
			if !ok || wr.Err() != nil || wr.Canceled {
				return errWatchBroken
			}
			if deleted(wr, myRev) {
				return nil
			}
		case wr, ok := <-own:
			if !ok || wr.Err() != nil || wr.Canceled {
				return errWatchBroken
			}
			if deleted(wr, myRev) {
				return errLeaseGone
			}
		}
	}
}

// deleted reports whether wr holds a deletion made after revision after.
func deleted(wr clientv3.WatchResponse, after int64) bool {
	for _, ev := range wr.Events {
		if ev.Type == mvccpb.DELETE && ev.Kv.ModRevision > after {
			return true
		}
	}
	return false
}

// abandon deletes our queue entry after the wait ended, so that the key is
// free for others at once. When etcd cannot be reached it does not wait:
// nobody keeps a lease of its own alive, so the entry goes when the lease
// expires; an entry on a shared lease is deleted in the background.
func (d *etcdDriver) abandon(name string, myRev int64, l *lease) {
	if l.shared {
		if !d.connDown() {
			ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			resp, err := d.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(name), "=", myRev)).
				Then(clientv3.OpDelete(name)).
				Commit()
			cancel()
			if err == nil && resp.Succeeded {
				d.unshare(l, name, false)
				return
			}
		}
		d.discard(l, name, myRev)
		return
	}
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
