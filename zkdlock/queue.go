package zkdlock

import (
	"context"
	"fmt"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

// Bounds of the waiting loop.
const (
	// fallbackPoll re-reads the queue while waiting, in case a watch
	// notification is lost.
	fallbackPoll = 2 * time.Second
	// abandonWait bounds how long a TryLock that lost waits for the
	// deletion of its node, while the session is up, before leaving it to
	// the background; and how long a call waits for the removals of this
	// driver's abandoned nodes under its key (settle). A caller whose ctx
	// ended waits leaveWait at most.
	abandonWait = time.Second
	// maxCreateAttempts bounds protected creation's retries.
	maxCreateAttempts = 6
	// maxRejoins bounds how often a waiter joins the queue again after its
	// session expired.
	maxRejoins = 3
	// maxGrantAgeDiv: a waiter woken by its predecessor's deletion takes
	// the lock without listing the queue again only within TTL/10 of its
	// watch request, whose send time its validity counts from.
	maxGrantAgeDiv = 10
)

// queuePos is where a node stands in its key's queue.
type queuePos struct {
	found  bool   // the node is in the queue
	lowest string // name of the holder's node (lowest sequence)
	pred   string // name of the node just before ours
	count  int    // lock nodes in the queue
	ahead  int    // lock nodes before ours
	maxSeq int    // highest sequence number in the queue
	last   string // name of the highest node other than ours
}

// position finds the node named own, of sequence ownSeq, in the listing
// children of its key node; names that are not lock nodes are skipped.
func position(children []string, own string, ownSeq int) queuePos {
	p := queuePos{maxSeq: -1}
	lowSeq, predSeq, lastSeq := 0, -1, -1
	for _, c := range children {
		s, err := parseSeq(c)
		if err != nil {
			continue // not a lock node
		}
		p.count++
		p.maxSeq = max(p.maxSeq, s)
		if c == own {
			p.found = true
		} else if s > lastSeq {
			p.last, lastSeq = c, s
		}
		if p.lowest == "" || s < lowSeq {
			p.lowest, lowSeq = c, s
		}
		if s < ownSeq {
			p.ahead++
			if s > predSeq {
				p.pred, predSeq = c, s
			}
		}
	}
	return p
}

// keyHint is what the driver remembers of a key node between calls. It
// only chooses which requests to send: what a grant rests on is proven by
// the replies.
type keyHint struct {
	known, absent bool
	// contended: the last lock node the driver created under the key had
	// others before it.
	contended bool
}

// hint returns keyPath's hint, made if needed; d.mu must be held.
func (d *zkDriver) hint(keyPath string) *keyHint {
	h := d.keys[keyPath]
	if h == nil {
		if len(d.keys) >= 4096 {
			clear(d.keys)
		}
		h = &keyHint{}
		d.keys[keyPath] = h
	}
	return h
}

// hintAbsent reports whether the key node is believed not to exist, so
// that the lock node is best created together with it.
func (d *zkDriver) hintAbsent(keyPath string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.keys[keyPath]
	return h == nil || !h.known || h.absent
}

// setHint records whether the key node was found absent.
func (d *zkDriver) setHint(keyPath string, absent bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.hint(keyPath)
	h.known, h.absent = true, absent
}

// contended reports whether the key is believed to have a queue, so that
// the listing is best sent together with the create.
func (d *zkDriver) contended(keyPath string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := d.keys[keyPath]
	return h != nil && h.known && !h.absent && h.contended
}

// noteQueue records whether n, just created, found others in the queue.
// A node created without the key node's Stat tells nothing.
func (d *zkDriver) noteQueue(n *node) {
	if n.keyCzxid == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.keys[n.keyPath]; h != nil {
		h.contended = !n.alone
	}
}

// children is a listing of a key node: its children's names and its Stat.
type children struct {
	names []string
	stat  *zk.Stat
}

// children lists keyPath's children, within ctx.
func (d *zkDriver) children(ctx context.Context, keyPath string) (children, error) {
	return call(ctx, func() (children, error) {
		names, stat, err := d.conn.Children(keyPath)
		return children{names, stat}, err
	})
}

// attempt is an acquisition under way in the queue: the lock node it
// created, the listing sent with the create (see listEarly) and the send
// time the grant's validity counts from.
type attempt struct {
	n     *node
	early <-chan listing
	sent  time.Time
}

// join starts an attempt of Acquire or AcquireQueued: a re-acquire with a
// token that holds the key, or else a lock node created in the key's
// queue (after this driver's removals of abandoned nodes there, when
// settle is set). When that ends the attempt — the re-acquire, a node
// alone in a new queue (granted at once), an error — join returns a nil
// attempt and the attempt's result.
func (d *zkDriver) join(ctx context.Context, req driver.Request, settle bool) (*attempt, driver.Result, error) {
	if d.isClosed() {
		return nil, driver.Result{}, driver.ErrClosed
	}
	if res, ok, err := d.reacquire(ctx, req); ok || err != nil {
		return nil, res, err
	}
	keyPath := d.keyPath(req.Key)
	if settle {
		if err := d.settle(ctx, keyPath); err != nil {
			return nil, driver.Result{}, d.wrap(ctx, "joining "+keyPath, err)
		}
	}
	a := &attempt{sent: time.Now(), early: d.listEarly(keyPath)}
	n, err := d.create(ctx, keyPath, encodeData(req.Token, req.TTL, req.Metadata))
	if err != nil {
		return nil, driver.Result{}, err
	}
	d.noteQueue(n)
	if n.alone {
		res, err := d.grant(ctx, req, n, a.sent)
		return nil, res, err
	}
	a.n = n
	return a, driver.Result{}, nil
}

// Acquire is TryLock: join the queue; when not at its head, leave again.
func (d *zkDriver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	a, res, err := d.join(ctx, req, true)
	if a == nil {
		return res, err
	}
	n, sent := a.n, a.sent
	var kids children
	pre, _, _, err := d.awaitEarly(ctx, n, a.early)
	if err == nil {
		if pre != nil {
			sent, kids = pre.sent, pre.kids
		} else {
			sent = time.Now()
			kids, err = d.childrenAndFence(ctx, n)
		}
	}
	if err != nil {
		d.giveUp(ctx, n)
		return driver.Result{}, d.wrap(ctx, "listing "+n.keyPath, err)
	}
	pos := position(kids.names, n.name, n.seq)
	switch {
	case !pos.found:
		return driver.Result{}, fmt.Errorf("%w: zookeeper %s: lock node %s vanished (session expired?)", driver.ErrUnavailable, d.servers, n.path)
	case pos.lowest != n.name:
		if _, share := parseShare(pos.lowest); share {
			// Refused by shares: a HolderTTL for the caller's wait.
			return d.refuse(ctx, n, qnode{name: pos.lowest}), nil
		}
		d.giveUp(ctx, n)
		return driver.Result{}, nil
	}
	return d.grant(ctx, req, n, sent)
}

// childrenAndFence lists the queue and, when n's fence is not known yet,
// reads it in the same round trip (two requests in flight at once).
// When the same transaction created the key node, its czxid (in the
// listing's stat) is the fence.
func (d *zkDriver) childrenAndFence(ctx context.Context, n *node) (children, error) {
	if n.fence != 0 || n.withParent {
		kids, err := d.children(ctx, n.keyPath)
		if err == nil && n.fence == 0 {
			n.fence = uint64(kids.stat.Czxid)
		}
		return kids, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.readFence(ctx, n) // on failure grant reads it again
	}()
	kids, err := d.children(ctx, n.keyPath)
	<-done
	return kids, err
}
