package zkdlock

import (
	"context"
	"slices"
	"time"

	"github.com/go-zookeeper/zk"
)

// leaveWait bounds how long a waiter whose ctx ended (or whose driver
// closed) waits for the removal of its lock node before it returns. A
// healthy server deletes the node well within it, so the node is gone when
// Lock returns; a slow one (a loaded server, a distant ensemble, a lost
// connection) does not hold the caller up: the removal goes on in the
// background, and frees the key when it lands, as it would have anyway.
const leaveWait = 25 * time.Millisecond

// closeWait bounds Close's wait for the deletions still under way: the
// removals of abandoned lock nodes (on a connection the driver does not
// own) and the idle key nodes' clean-up, together.
const closeWait = 2 * time.Second

// leave removes n, which its waiter gave up on: see goLeave.
func (d *zkDriver) leave(n *node) {
	d.goLeave(n.keyPath, func() { d.reap(n.keyPath, n.path, "") })
}

// goLeave runs remove, which deletes the lock node of a waiter that gave
// up under keyPath, in the background, until the node is gone or the
// driver closes. It waits for it up to leaveWait, and not at all when the
// connection has no session (remove then waits for one). Until remove is
// done, the driver's own later calls on keyPath wait for it (settle), and
// Close waits for it, bounded.
func (d *zkDriver) goLeave(keyPath string, remove func()) {
	done := make(chan struct{})
	d.mu.Lock()
	d.leaving[keyPath] = append(d.leaving[keyPath], done)
	d.mu.Unlock()
	if !d.goAfter(func() {
		defer d.left(keyPath, done)
		remove()
	}) {
		d.left(keyPath, done) // closed: the session's end removes the node
		return
	}
	if d.conn.State() != zk.StateHasSession {
		return
	}
	t := time.NewTimer(leaveWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-d.closeCh:
	}
}

// left records that the removal behind done has ended.
func (d *zkDriver) left(keyPath string, done chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	chans := slices.DeleteFunc(d.leaving[keyPath], func(c chan struct{}) bool { return c == done })
	if len(chans) == 0 {
		delete(d.leaving, keyPath)
	} else {
		d.leaving[keyPath] = chans
	}
	close(done)
}

// pendingLeaves returns the channels of the removals still running, under
// keyPath or, when keyPath is "", under every key.
func (d *zkDriver) pendingLeaves(keyPath string) []chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if keyPath != "" {
		return slices.Clone(d.leaving[keyPath])
	}
	var all []chan struct{}
	for _, chans := range d.leaving {
		all = append(all, chans...)
	}
	return all
}

// settle waits until the nodes this driver's waiters left under keyPath
// are gone, so that a later call of this driver does not find its own
// abandoned node in the queue. It waits only while the connection has a
// session, and at most abandonWait; it returns ctx.Err() if ctx ends
// first.
func (d *zkDriver) settle(ctx context.Context, keyPath string) error {
	pending := d.pendingLeaves(keyPath)
	if len(pending) == 0 || d.conn.State() != zk.StateHasSession {
		return nil
	}
	t := time.NewTimer(abandonWait)
	defer t.Stop()
	for _, done := range pending {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case <-d.closeCh:
			return nil
		}
	}
	return nil
}

// awaitLeaves waits, within ctx, for every removal still running, when the
// connection has a session (without one they cannot land).
func (d *zkDriver) awaitLeaves(ctx context.Context) {
	if d.conn.State() != zk.StateHasSession {
		return
	}
	for _, done := range d.pendingLeaves("") {
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
	}
}
