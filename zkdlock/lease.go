package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

// holding is a lock this driver holds: its node, and the lease timer that
// deletes the node when the TTL runs out without a refresh.
type holding struct {
	key, token string
	n          *node
	// shared marks a share node (AcquireShared), taken with limit.
	shared bool
	limit  int
	// write serialises the writes of the node's data (refresh,
	// SetMetadata), so that none overwrites a newer one's metadata.
	write sync.Mutex

	// Guarded by zkDriver.mu.
	metadata string
	ttl      time.Duration
	expires  time.Time // local clock: the node is deleted at this moment
	timer    *time.Timer
	done     bool // released or expired: no longer in held
}

// hk is h's key in zkDriver.held.
func (h *holding) hk() holdKey { return holdKey{h.key, h.token, h.shared} }

// encode is h's node data for a lease of ttl with metadata.
func (h *holding) encode(ttl time.Duration, metadata string) []byte {
	if h.shared {
		return encodeShareData(h.token, ttl, h.limit, metadata)
	}
	return encodeData(h.token, ttl, metadata)
}

// lookup returns the token's grant of key on this driver, exclusive or
// shared (a token never has both: an exclusive node waits for every share
// before it, a share for every exclusive node before it).
func (d *zkDriver) lookup(key, token string) *holding {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.held[holdKey{key, token, false}]; h != nil {
		return h
	}
	return d.held[holdKey{key, token, true}]
}

// lookupAs returns the token's exclusive (shared false) or shared grant of
// key on this driver.
func (d *zkDriver) lookupAs(key, token string, shared bool) *holding {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held[holdKey{key, token, shared}]
}

// drop forgets h; it stays on the backend only if nobody deletes its node.
func (d *zkDriver) drop(h *holding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h.done = true
	h.timer.Stop()
	if k := h.hk(); d.held[k] == h {
		delete(d.held, k)
	}
}

// readFence reads n's czxid (and the session that really owns it).
func (d *zkDriver) readFence(ctx context.Context, n *node) error {
	stat, err := call(ctx, func() (*zk.Stat, error) {
		ok, stat, err := d.conn.Exists(n.path)
		if err == nil && !ok {
			err = zk.ErrNoNode
		}
		return stat, err
	})
	if err != nil {
		return err
	}
	n.fence, n.session = uint64(stat.Czxid), stat.EphemeralOwner
	return nil
}

// grant records n as held and arms its lease timer. sent is the send time
// of the request that saw n at the head of the queue: the session lived
// then, so it lives for at least a session timeout (≥ TTL) after it.
func (d *zkDriver) grant(ctx context.Context, req driver.Request, n *node, sent time.Time) (driver.Result, error) {
	return d.grantAs(ctx, req, n, sent, nil)
}

// grantAs is grant for an exclusive node (sh nil) or a share node of limit
// *sh.
func (d *zkDriver) grantAs(ctx context.Context, req driver.Request, n *node, sent time.Time, sh *int) (driver.Result, error) {
	if n.fence == 0 {
		if err := d.readFence(ctx, n); err != nil {
			d.giveUp(ctx, n)
			return driver.Result{}, d.wrap(ctx, "reading "+n.path, err)
		}
	}
	h := &holding{key: req.Key, token: req.Token, n: n, metadata: req.Metadata, ttl: req.TTL}
	if sh != nil {
		h.shared, h.limit = true, *sh
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.leave(n)
		return driver.Result{}, driver.ErrClosed
	}
	h.expires = time.Now().Add(req.TTL)
	h.timer = time.AfterFunc(req.TTL, func() { d.expire(h) })
	d.held[h.hk()] = h
	d.mu.Unlock()
	return driver.Result{Acquired: true, Fence: n.fence, ValidUntil: driver.ValidUntil(sent, req.TTL)}, nil
}

// expire runs when h's lease timer fires: unless a refresh moved the
// deadline meanwhile, the lease has lapsed and the node goes.
func (d *zkDriver) expire(h *holding) {
	d.mu.Lock()
	if h.done {
		d.mu.Unlock()
		return
	}
	if wait := time.Until(h.expires); wait > 0 {
		h.timer.Reset(wait)
		d.mu.Unlock()
		return
	}
	h.done = true
	if k := h.hk(); d.held[k] == h {
		delete(d.held, k)
	}
	d.mu.Unlock()
	d.goReap(h.n.keyPath, h.n.path, "")
}

// reacquire handles an Acquire by a token that already holds the key on
// this driver: it keeps the node and fence and sets the new TTL. ok is false
// when the token holds nothing here.
func (d *zkDriver) reacquire(ctx context.Context, req driver.Request) (res driver.Result, ok bool, err error) {
	h := d.lookupAs(req.Key, req.Token, false)
	if h == nil {
		return driver.Result{}, false, nil
	}
	sent := time.Now()
	if err := d.refresh(ctx, h, req.TTL, req.Metadata); err != nil {
		if errors.Is(err, driver.ErrNotHeld) {
			return driver.Result{}, false, nil
		}
		return driver.Result{}, true, err
	}
	return driver.Result{Acquired: true, Fence: h.n.fence, ValidUntil: driver.ValidUntil(sent, req.TTL)}, true, nil
}

// Refresh checks that the node still exists and belongs to the current
// session, and moves the lease timer to ttl from now.
func (d *zkDriver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	if d.isClosed() {
		return driver.ErrClosed
	}
	h := d.lookup(key, token)
	if h == nil {
		return fmt.Errorf("%w: %q is not held by this token", driver.ErrNotHeld, key)
	}
	return d.refreshKeep(ctx, h, ttl)
}

// refreshKeep is refresh with the metadata h has.
func (d *zkDriver) refreshKeep(ctx context.Context, h *holding, ttl time.Duration) error {
	h.write.Lock()
	defer h.write.Unlock()
	d.mu.Lock()
	metadata := h.metadata
	d.mu.Unlock()
	return d.refreshLocked(ctx, h, ttl, metadata)
}

// refresh extends h's lease to ttl from now and stores metadata with it.
func (d *zkDriver) refresh(ctx context.Context, h *holding, ttl time.Duration, metadata string) error {
	h.write.Lock()
	defer h.write.Unlock()
	return d.refreshLocked(ctx, h, ttl, metadata)
}

// refreshLocked is refresh with h.write held.
func (d *zkDriver) refreshLocked(ctx context.Context, h *holding, ttl time.Duration, metadata string) error {
	if s := d.conn.SessionID(); s != h.n.session {
		d.drop(h)
		return fmt.Errorf("%w: %q: the ZooKeeper session that held it has expired", driver.ErrNotHeld, h.key)
	}
	d.mu.Lock()
	rewrite := ttl != h.ttl || metadata != h.metadata
	d.mu.Unlock()
	stat, err := call(ctx, func() (*zk.Stat, error) {
		if rewrite { // keep what Inspect shows true
			return d.conn.Set(h.n.path, h.encode(ttl, metadata), -1)
		}
		ok, stat, err := d.conn.Exists(h.n.path)
		if err == nil && !ok {
			err = zk.ErrNoNode
		}
		return stat, err
	})
	if errors.Is(err, zk.ErrNoNode) || err == nil && stat.EphemeralOwner != h.n.session {
		d.drop(h)
		return fmt.Errorf("%w: %q: its lock node is gone", driver.ErrNotHeld, h.key)
	}
	if err != nil {
		return d.wrap(ctx, "refreshing "+h.n.path, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h.done {
		return fmt.Errorf("%w: %q: its lease ran out", driver.ErrNotHeld, h.key)
	}
	h.ttl, h.metadata = ttl, metadata
	h.expires = time.Now().Add(ttl)
	h.timer.Reset(ttl)
	return nil
}

// Release deletes the token's lock node; the next waiter, watching it, takes
// the lock. The key node goes shortly after, if it stays empty.
func (d *zkDriver) Release(ctx context.Context, key, token string) error {
	if d.isClosed() {
		return driver.ErrClosed
	}
	h := d.lookup(key, token)
	if h == nil {
		return fmt.Errorf("%w: %q is not held by this token", driver.ErrNotHeld, key)
	}
	if d.conn.SessionID() != h.n.session {
		d.drop(h)
		return fmt.Errorf("%w: %q: the ZooKeeper session that held it has expired", driver.ErrNotHeld, key)
	}
	err := d.remove(ctx, h)
	if errors.Is(err, zk.ErrNoNode) {
		d.drop(h)
		return fmt.Errorf("%w: %q: its lock node is gone", driver.ErrNotHeld, key)
	}
	if err != nil {
		// Still held; the lease timer deletes the node if no later
		// Release does.
		return d.wrap(ctx, "deleting "+h.n.path, err)
	}
	d.drop(h)
	return nil
}

func (d *zkDriver) remove(ctx context.Context, h *holding) error {
	if err := d.deleteNode(ctx, h.n.path); err != nil {
		return err
	}
	d.scheduleCleanup(h.n.keyPath)
	return nil
}

func (d *zkDriver) deleteNode(ctx context.Context, path string) error {
	_, err := call(ctx, func() (struct{}, error) { return struct{}{}, d.conn.Delete(path, -1) })
	return err
}

// abandon deletes a node that will not be held (TryLock lost, a waiter
// left), before returning when it can, else in the background.
func (d *zkDriver) abandon(n *node) {
	if d.conn.State() != zk.StateHasSession {
		d.goReap(n.keyPath, n.path, "")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abandonWait)
	defer cancel()
	if err := d.deleteNode(ctx, n.path); err != nil && !errors.Is(err, zk.ErrNoNode) {
		d.goReap(n.keyPath, n.path, "")
		return
	}
	d.scheduleCleanup(n.keyPath)
}

// giveUp removes n when its caller gives up: at once in the background
// when ctx ended or the driver closed (leave), else before returning
// (abandon).
func (d *zkDriver) giveUp(ctx context.Context, n *node) {
	if ctx.Err() != nil || d.isClosed() {
		d.leave(n)
		return
	}
	d.abandon(n)
}

// goReap deletes a node (by path, or by the guid in its name) in the
// background, trying until it is gone or the driver closes.
func (d *zkDriver) goReap(keyPath, path, guid string) {
	d.goAfter(func() { d.reap(keyPath, path, guid) })
}

// goAfter runs f in the background, counted in d.bg, which Close waits
// for. After Close it runs f once more uncounted on an application's
// connection (f stops at closeCh), and not at all on the driver's own,
// whose session's end took every node along. It reports whether f runs.
func (d *zkDriver) goAfter(f func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		if d.ownConn {
			return false
		}
		go f() // one attempt: f stops at closeCh
		return true
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		f()
	}()
	return true
}

func (d *zkDriver) reap(keyPath, path, guid string) {
	wait := 50 * time.Millisecond
	for !d.reapOnce(keyPath, path, guid) {
		select {
		case <-d.closeCh:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

func (d *zkDriver) reapOnce(keyPath, path, guid string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { // Close does not wait for a request that will not answer
		select {
		case <-d.closeCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	if path == "" {
		p, err := call(ctx, func() (string, error) { return d.findGUID(keyPath, guid) })
		if err != nil {
			return false
		}
		if p == "" {
			return true
		}
		path = p
	}
	if err := d.deleteNode(ctx, path); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return false
	}
	d.scheduleCleanup(keyPath)
	return true
}
