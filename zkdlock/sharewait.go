package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.SharedQueuer = (*zkDriver)(nil)

// AcquireSharedQueued implements driver.SharedQueuer: a permit or reader
// that must wait keeps its share node in the key's queue, where
// AcquireShared's attempt would delete it, until the nodes before it let
// it in (shareGranted). Its place is kept: permits go in arrival order, and
// a writer that joined later waits for it.
//
// A share node may be let in by the end of any node before it (a semaphore's
// holders end in any order), so the waiter does not watch one node, as an
// exclusive waiter does: it rides on the driver's one children watch of the
// key node (see WatchReleases), and decides from the listing that each
// re-arming of that watch returns. A release thus costs each waiting
// client the one re-arm its watch makes anyway, and no attempt: no create,
// listing or delete. Only the waiter the release lets in goes on, to its
// grant. The listing a grant is decided from was sent after the share
// node's create returned (so it has the node, unless its session expired);
// nodes before it can only go, never come, so what it proves stays true.
// The grant's validity counts from that listing's send, and a listing older
// than TTL/10 is made afresh first. The waiter whose place lets the end of
// any one node before it in (see deciders) watches those nodes too, so
// that their deletion event grants it with no listing after the release,
// within TTL/10 of the watches' send and in the same session. A fallback poll lists the queue every
// 2 s in case a notification is lost. When the session expired meanwhile,
// the node is gone: the waiter joins again at the tail, up to three times.
func (d *zkDriver) AcquireSharedQueued(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	if res, ok, err := d.reshare(ctx, req); ok || err != nil {
		return res, err
	}
	keyPath, limit := d.keyPath(req.Key), req.Limit
	data := encodeShareData(req.Token, req.TTL, limit, req.Metadata)
	sent := time.Now()
	n, err := d.createAs(ctx, keyPath, shareTag(limit), data)
	if err != nil {
		return driver.Result{}, err
	}
	if n.alone {
		return d.grantAs(ctx, req.Request, n, sent, &limit)
	}
	created := time.Now()
	w, wake, stop, err := d.subscribe(ctx, keyPath)
	if err != nil {
		d.giveUp(ctx, n)
		return driver.Result{}, err
	}
	defer stop()
	poll := time.NewTimer(fallbackPoll)
	defer poll.Stop()
	var retry waitRetry
	// The watches of the nodes that decide alone (see deciders): their
	// names, first result, send time and stop.
	var (
		watched    []string
		direct     <-chan awaited
		directSent time.Time
		stopDirect chan struct{}
	)
	dropDirect := func() {
		if stopDirect != nil {
			close(stopDirect)
		}
		watched, direct, stopDirect = nil, nil, nil
	}
	defer dropDirect()
	l := d.latestAfter(w, created)
	for rejoins := 0; ; {
		if l == nil || time.Since(l.sent) > req.TTL/maxGrantAgeDiv {
			l = &listing{sent: time.Now()}
			l.kids, l.err = d.childrenAndFence(ctx, n)
		}
		if err := l.err; err != nil && !errors.Is(err, zk.ErrNoNode) {
			if !d.again(ctx, &retry, err) {
				return d.endWait(ctx, n, "listing "+keyPath, err)
			}
			l = nil
			continue
		}
		retry = 0
		q := sortQueue(l.kids.names)
		if !slices.ContainsFunc(q, func(c qnode) bool { return c.name == n.name }) {
			// Our node is gone: its session expired while we waited. Our
			// place is lost; join again at the tail.
			if rejoins++; rejoins > maxRejoins || ctx.Err() != nil {
				return driver.Result{}, fmt.Errorf("%w: zookeeper %s: lock node %s vanished while waiting (session expired)", driver.ErrUnavailable, d.servers, n.path)
			}
			sent = time.Now()
			if n, err = d.createAs(ctx, keyPath, shareTag(limit), data); err != nil {
				return driver.Result{}, err
			}
			if n.alone {
				return d.grantAs(ctx, req.Request, n, sent, &limit)
			}
			created, l = time.Now(), nil
			continue
		}
		ok, err := shareGranted(q, n.name, req.Key, limit)
		if err != nil {
			d.giveUp(ctx, n)
			return driver.Result{}, err
		}
		if ok {
			if n.fence == 0 && n.withParent && l.kids.stat != nil {
				n.fence = uint64(l.kids.stat.Czxid)
			}
			return d.grantAs(ctx, req.Request, n, l.sent, &limit)
		}
		// When the end of any one node before ours lets it in, those nodes
		// are watched as well: the event alone then proves the grant, with
		// no listing after the release. The watches stay while the same
		// nodes decide.
		if names := deciders(q, n.name, limit); !slices.Equal(names, watched) {
			dropDirect()
			if watched = names; names != nil {
				stopDirect = make(chan struct{})
				directSent = time.Now()
				direct = d.watchAny(keyPath, names, stopDirect)
			}
		}
		select {
		case a := <-direct:
			dropDirect()
			if (a.err == nil && a.ev.Type == zk.EventNodeDeleted && a.ev.Err == nil || errors.Is(a.err, zk.ErrNoNode)) &&
				time.Since(directSent) <= req.TTL/maxGrantAgeDiv && d.conn.SessionID() == n.session {
				// (A new session means ours expired, and our node with it.)
				d.wakeups.Add(1)
				return d.grantAs(ctx, req.Request, n, directSent, &limit)
			}
			l = nil // another event, a failed watch, or too long ago: list again
		case <-wake:
			d.wakeups.Add(1)
			l = d.latestAfter(w, created)
		case <-poll.C:
			poll.Reset(fallbackPoll)
			l = nil
		case <-ctx.Done():
			return d.endWait(ctx, n, "waiting in "+keyPath, ctx.Err())
		case <-d.closeCh:
			return d.endWait(ctx, n, "waiting in "+keyPath, driver.ErrClosed)
		}
	}
}

// maxDeciders bounds how many nodes a waiting share watches one by one.
const maxDeciders = 8

// deciders returns the nodes before own (a waiting share of limit in the
// sorted queue q) the end of any one of which lets own in, when there are
// at most maxDeciders of them, else nil: the one exclusive node before it,
// when the share nodes before it leave room; or, with no exclusive node
// before it, all the limit share nodes before it. As nodes never join
// before own, the end of one of them proves the grant; it stays proven
// whatever else ends.
func deciders(q []qnode, own string, limit int) []string {
	before := q[:slices.IndexFunc(q, func(c qnode) bool { return c.name == own })]
	var excl []string
	shares := 0
	for _, c := range before {
		if c.share {
			shares++
		} else {
			excl = append(excl, c.name)
		}
	}
	switch {
	case len(excl) == 1 && (limit == 0 || shares < limit):
		return excl
	case len(excl) == 0 && limit > 0 && shares == limit && limit <= maxDeciders:
		names := make([]string, len(before))
		for i, c := range before {
			names[i] = c.name
		}
		return names
	}
	return nil
}

// watchAny sets a watch on each of the nodes called names under keyPath,
// in the background, and passes on the first that fires or fails, until
// stop closes.
func (d *zkDriver) watchAny(keyPath string, names []string, stop <-chan struct{}) <-chan awaited {
	out := make(chan awaited, 1)
	for _, name := range names {
		go func() {
			_, _, watch, err := d.conn.GetW(keyPath + "/" + name)
			if err != nil {
				select {
				case out <- awaited{err: err}:
				default:
				}
				return
			}
			select {
			case ev := <-watch:
				select {
				case out <- awaited{ev: ev}:
				default:
				}
			case <-stop:
			}
		}()
	}
	return out
}
