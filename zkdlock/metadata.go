package zkdlock

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.MetadataSetter = (*zkDriver)(nil)

// SetMetadata implements driver.MetadataSetter: one setData of the lock's
// node with the new metadata and the lease it has (the node's czxid, and so
// the fence and queue position, stay; the lease is not extended). Data
// watchers of the node see the change.
func (d *zkDriver) SetMetadata(ctx context.Context, key, token, metadata string) error {
	if d.isClosed() {
		return driver.ErrClosed
	}
	h := d.lookup(key, token)
	if h == nil {
		return fmt.Errorf("%w: %q is not held by this token", driver.ErrNotHeld, key)
	}
	if s := d.conn.SessionID(); s != h.n.session {
		d.drop(h)
		return fmt.Errorf("%w: %q: the ZooKeeper session that held it has expired", driver.ErrNotHeld, key)
	}
	h.write.Lock()
	defer h.write.Unlock()
	d.mu.Lock()
	done, data := h.done, h.encode(h.ttl, metadata)
	d.mu.Unlock()
	if done {
		return fmt.Errorf("%w: %q: its lease ran out", driver.ErrNotHeld, key)
	}
	stat, err := call(ctx, func() (*zk.Stat, error) { return d.conn.Set(h.n.path, data, -1) })
	if errors.Is(err, zk.ErrNoNode) || err == nil && stat.EphemeralOwner != h.n.session {
		d.drop(h)
		return fmt.Errorf("%w: %q: its lock node is gone", driver.ErrNotHeld, key)
	}
	if err != nil {
		return d.wrap(ctx, "setting the metadata of "+h.n.path, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h.done {
		return fmt.Errorf("%w: %q: its lease ran out", driver.ErrNotHeld, key)
	}
	h.metadata = metadata
	return nil
}
