package zkdlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

// protectedPrefix starts the name of every node made by protected creation,
// as in go-zookeeper and Curator: "_c_<32 hex digits>-lock-<sequence>".
const protectedPrefix = "_c_"

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

// node is one lock node of this driver.
type node struct {
	keyPath string
	path    string
	name    string
	seq     int
	session int64
	// fence is the node's czxid, 0 until read.
	fence uint64
	// withParent is set when the same transaction created the key node:
	// its czxid is then ours.
	withParent bool
	// alone is set when the transaction that created the node proved it
	// the key node's only child: it heads the queue, as every later node
	// gets a higher sequence number.
	alone bool
	// keyCzxid and siblings come from the creating transaction's reply,
	// when it had the key node's Stat (else 0): the key node's czxid, and
	// its number of children right after the create, ours included.
	keyCzxid int64
	siblings int32
}

// parseSeq reads the sequence number after the last "lock-" of a node name,
// as zk.Lock does (and after "__" for the Python client's nodes).
func parseSeq(name string) (int, error) {
	parts := strings.Split(name, "lock-")
	if len(parts) == 1 {
		parts = strings.Split(name, "__")
	}
	return strconv.Atoi(parts[len(parts)-1])
}

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

func newGUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("zkdlock: guid: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// create joins the key's queue. When ctx ends before the create answers, or
// the answer is a connection failure after which the node may exist, the
// node is deleted (found by its guid) in the background; create returns at
// once, or within leaveWait on ctx's end (see goLeave).
func (d *zkDriver) create(ctx context.Context, keyPath string, data []byte) (*node, error) {
	guid, err := newGUID()
	if err != nil {
		return nil, err
	}
	type result struct {
		n   *node
		err error
	}
	done := func(r result) (*node, error) {
		if r.err != nil && transient(r.err) {
			d.goReap(keyPath, "", guid) // the node may exist
		}
		return r.n, d.wrap(ctx, "creating a lock node under "+keyPath, r.err)
	}
	if ctx.Done() == nil { // ctx cannot end: no need for another goroutine
		n, err := d.createNode(keyPath, guid, data)
		return done(result{n, err})
	}
	ch := make(chan result, 1)
	go func() {
		n, err := d.createNode(keyPath, guid, data)
		ch <- result{n, err}
	}()
	select {
	case r := <-ch:
		return done(r)
	case <-ctx.Done():
	case <-d.closeCh:
	}
	// The caller leaves: leave nothing behind, without holding the caller
	// up for the create's answer and a delete.
	d.goLeave(keyPath, func() {
		r := <-ch
		switch {
		case r.err == nil:
			d.reap(keyPath, r.n.path, "")
		case transient(r.err):
			d.reap(keyPath, "", guid)
		}
	})
	if d.isClosed() {
		return nil, driver.ErrClosed
	}
	return nil, d.wrap(ctx, "creating a lock node under "+keyPath, ctx.Err())
}

// createNode is protected creation, blocking: it creates the key node too
// when needed (in one transaction with the lock node where it can), and
// after a connection loss looks for its node by guid before trying again.
//
// The lock node is created in one transaction with an empty write to the
// key node (and with the key node itself when it is believed absent). The
// write's reply is the key node's Stat right after our create: its mzxid is
// the transaction's zxid, the lock node's czxid, our fence; and when it
// counts one child, that child is ours, so the node heads the queue without
// a listing (see node.alone).
func (d *zkDriver) createNode(keyPath, guid string, data []byte) (*node, error) {
	prefix := keyPath + "/" + protectedPrefix + guid + "-lock-"
	var (
		lastErr error
		plain   bool // the key node may not be written: no write in the transaction
	)
	for attempt := 0; attempt < maxCreateAttempts; attempt++ {
		var (
			path       string
			err        error
			withParent bool
			stat       *zk.Stat
		)
		lock := &zk.CreateRequest{Path: prefix, Data: data, Acl: d.acl, Flags: zk.FlagEphemeralSequential}
		touch := &zk.SetDataRequest{Path: keyPath, Version: -1}
		if d.hintAbsent(keyPath) {
			ops := []any{&zk.CreateRequest{Path: keyPath, Acl: d.acl, Flags: zk.FlagPersistent}, lock, touch}
			if plain {
				ops = ops[:2]
			}
			var res []zk.MultiResponse
			res, err = d.conn.Multi(ops...)
			switch {
			case err == nil && len(res) == len(ops):
				path, withParent = res[1].String, true
				if !plain {
					stat = res[2].Stat
				}
				d.setHint(keyPath, false)
			case errors.Is(err, zk.ErrNodeExists):
				d.setHint(keyPath, false)
				lastErr = err
				continue
			case errors.Is(err, zk.ErrNoNode):
				if err := d.ensurePath(parentOf(keyPath)); err != nil {
					return nil, err
				}
				lastErr = err
				continue
			case errors.Is(err, zk.ErrNoAuth) && !plain:
				plain = true // perhaps the write: try without it
				lastErr = err
				continue
			case err == nil:
				err = fmt.Errorf("zkdlock: multi returned %d results, want %d", len(res), len(ops))
			}
		} else if plain {
			path, err = d.conn.Create(prefix, data, zk.FlagEphemeralSequential, d.acl)
			if errors.Is(err, zk.ErrNoNode) {
				d.setHint(keyPath, true)
				lastErr = err
				continue
			}
		} else {
			var res []zk.MultiResponse
			res, err = d.conn.Multi(lock, touch)
			if err == nil && len(res) == 2 && res[1].Stat != nil {
				path, stat = res[0].String, res[1].Stat
			} else if err == nil {
				err = fmt.Errorf("zkdlock: multi returned %d results, want 2", len(res))
			}
			if errors.Is(err, zk.ErrNoNode) {
				d.setHint(keyPath, true)
				lastErr = err
				continue
			}
			if errors.Is(err, zk.ErrNoAuth) {
				// The key node's ACL may allow creating children but not
				// writing it: create alone, read the fence after.
				plain = true
				lastErr = err
				continue
			}
		}
		switch {
		case err == nil:
			n, err := d.newNode(keyPath, path, withParent)
			if n != nil && stat != nil {
				n.fence = uint64(stat.Mzxid)
				n.alone = stat.NumChildren == 1
				n.keyCzxid, n.siblings = stat.Czxid, stat.NumChildren
			}
			return n, err
		case errors.Is(err, zk.ErrSessionExpired):
			lastErr = err // the node died with the session; try again
		case transient(err):
			found, ferr := d.findGUID(keyPath, guid)
			if ferr != nil {
				return nil, err
			}
			if found != "" {
				return d.newNode(keyPath, found, false)
			}
			lastErr = err
		default:
			return nil, err
		}
	}
	return nil, fmt.Errorf("no lock node under %s after %d attempts (the key node kept changing): %w", keyPath, maxCreateAttempts, lastErr)
}

func (d *zkDriver) newNode(keyPath, path string, withParent bool) (*node, error) {
	name := path[strings.LastIndexByte(path, '/')+1:]
	seq, err := parseSeq(name)
	if err != nil {
		return nil, fmt.Errorf("zkdlock: created node %q has no sequence number: %w", path, err)
	}
	return &node{keyPath: keyPath, path: path, name: name, seq: seq, session: d.conn.SessionID(), withParent: withParent}, nil
}

// findGUID returns the path of the node whose name carries guid, or "".
func (d *zkDriver) findGUID(keyPath, guid string) (string, error) {
	children, _, err := d.conn.Children(keyPath)
	if errors.Is(err, zk.ErrNoNode) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, c := range children {
		if strings.HasPrefix(c, protectedPrefix+guid+"-") {
			return keyPath + "/" + c, nil
		}
	}
	return "", nil
}

func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// ensurePath creates p and its missing parents as persistent nodes.
func (d *zkDriver) ensurePath(p string) error {
	if p == "/" {
		return nil
	}
	cur := ""
	for _, seg := range strings.Split(p[1:], "/") {
		cur += "/" + seg
		if _, err := d.conn.Create(cur, nil, zk.FlagPersistent, d.acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("creating %s: %w", cur, err)
		}
	}
	return nil
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

type children struct {
	names []string
	stat  *zk.Stat
}

func (d *zkDriver) children(ctx context.Context, keyPath string) (children, error) {
	return call(ctx, func() (children, error) {
		names, stat, err := d.conn.Children(keyPath)
		return children{names, stat}, err
	})
}

// Acquire is TryLock: join the queue; when not at its head, leave again.
func (d *zkDriver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	if err := d.admit(req.TTL); err != nil {
		return driver.Result{}, err
	}
	if res, ok, err := d.reacquire(ctx, req); ok || err != nil {
		return res, err
	}
	keyPath := d.keyPath(req.Key)
	if err := d.settle(ctx, keyPath); err != nil {
		return driver.Result{}, d.wrap(ctx, "joining "+keyPath, err)
	}
	sent := time.Now()
	early := d.listEarly(keyPath)
	n, err := d.create(ctx, keyPath, encodeData(req.Token, req.TTL, req.Metadata))
	if err != nil {
		return driver.Result{}, err
	}
	d.noteQueue(n)
	if n.alone {
		return d.grant(ctx, req, n, sent)
	}
	var kids children
	pre, _, _, err := d.awaitEarly(ctx, n, early)
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

// AcquireQueued is Lock: join the queue and wait, watching only the node
// just before ours, until ours is the lowest.
func (d *zkDriver) AcquireQueued(ctx context.Context, req driver.Request) (driver.Result, error) {
	if err := d.admit(req.TTL); err != nil {
		return driver.Result{}, err
	}
	if res, ok, err := d.reacquire(ctx, req); ok || err != nil {
		return res, err
	}
	keyPath := d.keyPath(req.Key)
	sent := time.Now()
	early := d.listEarly(keyPath)
	n, err := d.create(ctx, keyPath, encodeData(req.Token, req.TTL, req.Metadata))
	if err != nil {
		return driver.Result{}, err
	}
	d.noteQueue(n)
	if n.alone {
		return d.grant(ctx, req, n, sent)
	}
	var poll *time.Timer
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	retry := 10 * time.Millisecond
	// fail ends the wait: the node is removed, before returning unless
	// ctx ended or the driver closed (see giveUp).
	fail := func(op string, err error) (driver.Result, error) {
		d.giveUp(ctx, n)
		if d.isClosed() {
			return driver.Result{}, driver.ErrClosed
		}
		return driver.Result{}, d.wrap(ctx, op, err)
	}
	// again decides whether a failed request is worth repeating: the
	// connection failed, not the request. Once queued, a waiter rides out
	// connection loss until its ctx ends; after a session expiry the next
	// listing shows its node gone, and it joins again.
	again := func(err error) bool {
		if ctx.Err() != nil || d.isClosed() || !transient(err) {
			return false
		}
		if d.sleepCtx(ctx, retry) != nil {
			return false
		}
		retry = min(2*retry, 500*time.Millisecond)
		return true
	}
	// pre is a listing made after our create, to start from. pred is the
	// node to watch next; "" lists the queue first. last says that pred is
	// the only node before ours: its going proves ours the lowest, as
	// nodes that join later get higher sequence numbers, and the queue
	// need not be listed again.
	pre, pred, last, err := d.awaitEarly(ctx, n, early)
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
			retry = 10 * time.Millisecond
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
