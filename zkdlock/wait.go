package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

// AcquireQueued is Lock: join the queue and wait, watching only the node
// just before ours, until ours is the lowest.
func (d *zkDriver) AcquireQueued(ctx context.Context, req driver.Request) (driver.Result, error) {
	a, res, err := d.join(ctx, req, false)
	if a == nil {
		return res, err
	}
	n := a.n
	var sent time.Time // the request the grant's validity counts from
	var poll *time.Timer
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	var retry waitRetry
	fail := func(op string, err error) (driver.Result, error) { return d.endWait(ctx, n, op, err) }
	again := func(err error) bool { return d.again(ctx, &retry, err) }
	// pre is a listing made after our create, to start from. pred is the
	// node to watch next; "" lists the queue first. last says that pred is
	// the only node before ours: its going proves ours the lowest, as
	// nodes that join later get higher sequence numbers, and the queue
	// need not be listed again.
	pre, pred, last, err := d.awaitEarly(ctx, n, a.early)
	if err != nil {
		return fail("listing "+n.keyPath, err)
	}
	for rejoins := 0; ; {
		listed := pred == ""
		if listed {
			var kids children
			if pre != nil {
				sent, kids, err, pre = pre.sent, pre.kids, pre.err, nil
				if err == nil && n.fence == 0 && n.withParent {
					n.fence = uint64(kids.stat.Czxid)
				}
			} else {
				sent = time.Now()
				kids, err = d.childrenAndFence(ctx, n)
			}
			if err != nil && !errors.Is(err, zk.ErrNoNode) {
				if again(err) {
					continue
				}
				return fail("listing "+n.keyPath, err)
			}
			retry = 0
			pos := position(kids.names, n.name, n.seq)
			if !pos.found {
				// Our node is gone: its session expired while we waited.
				// Our place is lost; join again at the tail.
				if rejoins++; rejoins > maxRejoins || ctx.Err() != nil {
					return driver.Result{}, fmt.Errorf("%w: zookeeper %s: lock node %s vanished while waiting (session expired)", driver.ErrUnavailable, d.servers, n.path)
				}
				sent = time.Now()
				if n, err = d.create(ctx, n.keyPath, encodeData(req.Token, req.TTL, req.Metadata)); err != nil {
					return driver.Result{}, err
				}
				if n.alone {
					return d.grant(ctx, req, n, sent)
				}
				continue
			}
			if pos.lowest == n.name {
				return d.grant(ctx, req, n, sent)
			}
			pred, last = pos.pred, pos.ahead == 1
		}
		watched := pred
		pred = "" // after this watch, list again unless it proves more
		if poll == nil {
			poll = time.NewTimer(fallbackPoll)
		} else {
			poll.Reset(fallbackPoll)
		}
		sent = time.Now()
		stop := make(chan struct{})
		select {
		case w := <-d.watch(n, watched, last, stop):
			if errors.Is(w.err, zk.ErrNoNode) {
				// Gone meanwhile. A node watched without a listing may
				// have been gone before ours joined, leaving another
				// before ours: only a listing's proves the way free.
				if last && listed {
					return d.grant(ctx, req, n, sent)
				}
				continue
			}
			if w.err != nil {
				if again(w.err) {
					continue
				}
				return fail("watching "+watched, w.err)
			}
			d.wakeups.Add(1)
			if w.relisted != nil {
				pre = w.relisted
				continue
			}
			// The grant's validity counts from the watch request, the
			// last one known to have reached the server; a wake-up long
			// after it lists the queue again for a fresher one.
			if last && w.ev.Type == zk.EventNodeDeleted && w.ev.Err == nil && time.Since(sent) <= req.TTL/maxGrantAgeDiv {
				return d.grant(ctx, req, n, sent)
			}
		case <-poll.C:
			close(stop)
		case <-ctx.Done():
			close(stop)
			return fail("waiting for "+watched, ctx.Err())
		case <-d.closeCh:
			close(stop)
			return fail("waiting for "+watched, driver.ErrClosed)
		}
	}
}

// endWait ends a queued wait that failed: n is removed, before returning
// unless ctx ended or the driver closed (see giveUp).
func (d *zkDriver) endWait(ctx context.Context, n *node, op string, err error) (driver.Result, error) {
	d.giveUp(ctx, n)
	if d.isClosed() {
		return driver.Result{}, driver.ErrClosed
	}
	return driver.Result{}, d.wrap(ctx, op, err)
}

// waitRetry is the pause before a queued waiter repeats a failed request:
// 10 ms after the zero value, doubling up to 500 ms; set it to zero after a
// success.
type waitRetry time.Duration

// again decides whether a queued waiter's failed request is worth
// repeating, and pauses for r first: the connection failed, not the
// request. Once queued, a waiter rides out connection loss until its ctx
// ends; after a session expiry the next listing shows its node gone, and
// it joins again.
func (d *zkDriver) again(ctx context.Context, r *waitRetry, err error) bool {
	if ctx.Err() != nil || d.isClosed() || !transient(err) {
		return false
	}
	pause := max(time.Duration(*r), 10*time.Millisecond)
	if d.sleepCtx(ctx, pause) != nil {
		return false
	}
	*r = waitRetry(min(2*pause, 500*time.Millisecond))
	return true
}

// listing is the answer to a listing of a key's queue.
type listing struct {
	kids children
	sent time.Time
	err  error
}

// listEarly lists keyPath in the background, at the same time as the
// create, when the key had a queue the last time: joining then takes one
// round trip instead of two. It returns nil otherwise.
func (d *zkDriver) listEarly(keyPath string) <-chan listing {
	if !d.contended(keyPath) {
		return nil
	}
	ch := make(chan listing, 1)
	sent := time.Now()
	go func() {
		names, stat, err := d.conn.Children(keyPath)
		ch <- listing{children{names, stat}, sent, err}
	}()
	return ch
}

// awaitEarly reads the listing listEarly sent with n's create (none when
// early is nil). The server ran it before or after the create; the key
// node's mzxid tells which, as the create's transaction wrote it. After:
// it is the queue with n in it, pre. Before: when n's sequence number is
// the next after the highest listed, no node joined in between, so the
// nodes before n are the listed ones still there, and the highest listed
// one, if it still exists, is the one just before n: pred, watched without
// another listing. With n the key node's second child, that one is the
// only one before n: last. In other cases the queue is listed as usual.
func (d *zkDriver) awaitEarly(ctx context.Context, n *node, early <-chan listing) (pre *listing, pred string, last bool, err error) {
	if early == nil {
		return nil, "", false, nil
	}
	var l listing
	select {
	case l = <-early:
	case <-ctx.Done():
		return nil, "", false, ctx.Err()
	case <-d.closeCh:
		return nil, "", false, driver.ErrClosed
	}
	stat := l.kids.stat
	if l.err != nil || n.fence == 0 || stat == nil || stat.Czxid != n.keyCzxid {
		return nil, "", false, nil
	}
	if uint64(stat.Mzxid) >= n.fence {
		return &l, "", false, nil
	}
	pos := position(l.kids.names, n.name, n.seq)
	if pos.last == "" || n.seq != pos.maxSeq+1 {
		return nil, "", false, nil
	}
	return nil, pos.last, n.siblings == 2, nil
}

// awaited is what became of a waiter's watch: the watch request's error,
// or the event that woke the waiter and, unless the event alone may prove
// the waiter the head, a listing of the queue made at once.
type awaited struct {
	err      error
	ev       zk.Event
	relisted *listing
}

// watch sets a watch on pred, the node before n, and waits for it to fire,
// in the background, until stop closes. The listing that follows a
// wake-up is sent from there at once, without a hop to the waiting
// goroutine and to another one for the request: it is on the path of
// every hand-off. It is left to the waiter while n's fence is still to be
// read (see childrenAndFence).
func (d *zkDriver) watch(n *node, pred string, last bool, stop <-chan struct{}) <-chan awaited {
	out := make(chan awaited, 1)
	relist := n.fence != 0 || n.withParent
	go func() {
		_, _, watch, err := d.conn.GetW(n.keyPath + "/" + pred)
		if err != nil {
			out <- awaited{err: err}
			return
		}
		d.armed.Add(1)
		select {
		case ev := <-watch:
			w := awaited{ev: ev}
			if relist && !(last && ev.Type == zk.EventNodeDeleted && ev.Err == nil) {
				l := listing{sent: time.Now()}
				names, stat, err := d.conn.Children(n.keyPath)
				l.kids, l.err = children{names, stat}, err
				w.relisted = &l
			}
			out <- w
		case <-stop:
		}
	}()
	return out
}
