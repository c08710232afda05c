package zkdlock

import (
	"context"
	"errors"
	"time"

	"github.com/go-zookeeper/zk"
)

// cleanupDelay is how long a key node must stay idle after a release before
// the driver deletes it. Deleting it at once would make a busy key pay for
// deleting and re-creating its node between every two holders.
const cleanupDelay = time.Second

// scheduleCleanup deletes keyPath once it has been idle for cleanupDelay,
// if it has no children then. Another release meanwhile postpones it.
func (d *zkDriver) scheduleCleanup(keyPath string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if t, ok := d.cleanups[keyPath]; ok {
		t.Reset(cleanupDelay)
		return
	}
	d.cleanups[keyPath] = time.AfterFunc(cleanupDelay, func() {
		d.mu.Lock()
		delete(d.cleanups, keyPath)
		d.mu.Unlock()
		d.goAfter(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			d.cleanupParent(ctx, keyPath)
		})
	})
}

// runCleanups runs the pending clean-ups now (at Close), within ctx, when
// the session is up.
func (d *zkDriver) runCleanups(ctx context.Context) {
	if d.conn.State() != zk.StateHasSession {
		return
	}
	d.mu.Lock()
	var paths []string
	for p, t := range d.cleanups {
		if t.Stop() {
			paths = append(paths, p)
		}
	}
	clear(d.cleanups)
	d.mu.Unlock()
	for _, p := range paths {
		d.cleanupParent(ctx, p)
	}
}

// cleanupParent deletes the key node when it has no children, ignoring the
// races (someone joined: NotEmpty; someone else deleted it: NoNode).
func (d *zkDriver) cleanupParent(ctx context.Context, keyPath string) {
	stat, err := call(ctx, func() (*zk.Stat, error) {
		ok, stat, err := d.conn.Exists(keyPath)
		if err == nil && !ok {
			err = zk.ErrNoNode
		}
		return stat, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		d.setHint(keyPath, true)
	}
	if err != nil || stat.NumChildren > 0 {
		return
	}
	if err := d.deleteNode(ctx, keyPath); err == nil || errors.Is(err, zk.ErrNoNode) {
		d.setHint(keyPath, true)
	}
}
