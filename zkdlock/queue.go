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
	// abandonWait bounds how long a waiter whose ctx ended waits for its
	// in-flight create or delete, while the session is up, before leaving
	// the clean-up to the background.
	abandonWait = time.Second
	// maxCreateAttempts bounds protected creation's retries.
	maxCreateAttempts = 6
	// maxRejoins bounds how often a waiter joins the queue again after its
	// session expired.
	maxRejoins = 3
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
}

func position(children []string, own string, ownSeq int) queuePos {
	var p queuePos
	lowSeq, predSeq := 0, -1
	for _, c := range children {
		s, err := parseSeq(c)
		if err != nil {
			continue // not a lock node
		}
		p.count++
		if c == own {
			p.found = true
		}
		if p.lowest == "" || s < lowSeq {
			p.lowest, lowSeq = c, s
		}
		if s < ownSeq && s > predSeq {
			p.pred, predSeq = c, s
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
// node is deleted (found by its guid) before or after create returns.
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
	// The caller leaves: leave nothing behind. A healthy create answers in
	// milliseconds; without a session it will not soon, so the clean-up
	// goes to the background at once.
	wait := abandonWait
	if d.conn.State() != zk.StateHasSession {
		wait = 0
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-ch:
		if r.err == nil {
			d.abandon(r.n)
		} else if transient(r.err) {
			d.goReap(keyPath, "", guid)
		}
	case <-t.C:
		d.goAfter(func() {
			if r := <-ch; r.err == nil || transient(r.err) {
				d.reap(keyPath, "", guid)
			}
		})
	}
	if d.isClosed() {
		return nil, driver.ErrClosed
	}
	return nil, d.wrap(ctx, "creating a lock node under "+keyPath, ctx.Err())
}

// createNode is protected creation, blocking: it creates the key node too
// when needed (in one transaction with the lock node where it can), and
// after a connection loss looks for its node by guid before trying again.
func (d *zkDriver) createNode(keyPath, guid string, data []byte) (*node, error) {
	prefix := keyPath + "/" + protectedPrefix + guid + "-lock-"
	var (
		lastErr error
		plain   bool
	)
	for attempt := 0; attempt < maxCreateAttempts; attempt++ {
		var (
			path       string
			err        error
			withParent bool
			fence      uint64
		)
		if d.hintAbsent(keyPath) {
			var res []zk.MultiResponse
			res, err = d.conn.Multi(
				&zk.CreateRequest{Path: keyPath, Acl: d.acl, Flags: zk.FlagPersistent},
				&zk.CreateRequest{Path: prefix, Data: data, Acl: d.acl, Flags: zk.FlagEphemeralSequential},
			)
			switch {
			case err == nil && len(res) == 2:
				path, withParent = res[1].String, true
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
			case err == nil:
				err = fmt.Errorf("zkdlock: multi returned %d results, want 2", len(res))
			}
		} else if plain {
			path, err = d.conn.Create(prefix, data, zk.FlagEphemeralSequential, d.acl)
			if errors.Is(err, zk.ErrNoNode) {
				d.setHint(keyPath, true)
				lastErr = err
				continue
			}
		} else {
			// The lock node and an empty write to the key node in one
			// transaction: both carry its zxid, so the key node's new
			// mzxid is the lock node's czxid, our fence, without another
			// request.
			var res []zk.MultiResponse
			res, err = d.conn.Multi(
				&zk.CreateRequest{Path: prefix, Data: data, Acl: d.acl, Flags: zk.FlagEphemeralSequential},
				&zk.SetDataRequest{Path: keyPath, Version: -1},
			)
			if err == nil && len(res) == 2 && res[1].Stat != nil {
				path, fence = res[0].String, uint64(res[1].Stat.Mzxid)
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
			if n != nil {
				n.fence = fence
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

// hintAbsent reports whether the key node is believed not to exist, so
// that the lock node is best created together with it.
func (d *zkDriver) hintAbsent(keyPath string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	absent, known := d.hints[keyPath]
	return absent || !known
}

func (d *zkDriver) setHint(keyPath string, absent bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.hints) >= 4096 {
		clear(d.hints)
	}
	d.hints[keyPath] = absent
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
	n, err := d.create(ctx, d.keyPath(req.Key), encodeData(req.Token, req.TTL, req.Metadata))
	if err != nil {
		return driver.Result{}, err
	}
	sent := time.Now()
	kids, err := d.childrenAndFence(ctx, n)
	if err != nil {
		d.abandon(n)
		return driver.Result{}, d.wrap(ctx, "listing "+n.keyPath, err)
	}
	pos := position(kids.names, n.name, n.seq)
	switch {
	case !pos.found:
		return driver.Result{}, fmt.Errorf("%w: zookeeper %s: lock node %s vanished (session expired?)", driver.ErrUnavailable, d.servers, n.path)
	case pos.lowest != n.name:
		d.abandon(n)
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
	n, err := d.create(ctx, d.keyPath(req.Key), encodeData(req.Token, req.TTL, req.Metadata))
	if err != nil {
		return driver.Result{}, err
	}
	poll := time.NewTimer(fallbackPoll)
	defer poll.Stop()
	retry := 10 * time.Millisecond
	// fail ends the wait: the node is removed before returning.
	fail := func(op string, err error) (driver.Result, error) {
		d.abandon(n)
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
	for rejoins := 0; ; {
		sent := time.Now()
		kids, err := d.childrenAndFence(ctx, n)
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			if again(err) {
				continue
			}
			return fail("listing "+n.keyPath, err)
		}
		retry = 10 * time.Millisecond
		pos := position(kids.names, n.name, n.seq)
		if !pos.found {
			// Our node is gone: its session expired while we waited. Our
			// place is lost; join again at the tail.
			if rejoins++; rejoins > maxRejoins || ctx.Err() != nil {
				return driver.Result{}, fmt.Errorf("%w: zookeeper %s: lock node %s vanished while waiting (session expired)", driver.ErrUnavailable, d.servers, n.path)
			}
			if n, err = d.create(ctx, n.keyPath, encodeData(req.Token, req.TTL, req.Metadata)); err != nil {
				return driver.Result{}, err
			}
			continue
		}
		if pos.lowest == n.name {
			return d.grant(ctx, req, n, sent)
		}
		watch, err := call(ctx, func() (<-chan zk.Event, error) {
			_, _, ch, err := d.conn.GetW(n.keyPath + "/" + pos.pred)
			return ch, err
		})
		if errors.Is(err, zk.ErrNoNode) {
			continue // the predecessor left meanwhile
		}
		if err != nil {
			if again(err) {
				continue
			}
			return fail("watching "+pos.pred, err)
		}
		poll.Reset(fallbackPoll)
		select {
		case <-watch:
			d.wakeups.Add(1)
		case <-poll.C:
		case <-ctx.Done():
			return fail("waiting for "+pos.pred, ctx.Err())
		case <-d.closeCh:
			return fail("waiting for "+pos.pred, driver.ErrClosed)
		}
	}
}
