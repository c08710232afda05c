package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-zookeeper/zk"
	"golang.org/x/sync/errgroup"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

var (
	_ driver.Lister        = (*zkDriver)(nil)
	_ driver.ForceReleaser = (*zkDriver)(nil)
)

// Bounds of List and ForceRelease.
const (
	// listReads bounds the keys whose queues List reads at once (two
	// requests each, pipelined on the one connection).
	listReads = 16
	// forceAttempts bounds how often ForceRelease reads the queue again
	// when its holder changed before the delete.
	forceAttempts = 5
)

// List implements driver.Lister. After a sync with the leader it lists the
// children of the base node (one request: ZooKeeper has no paged listing;
// the names alone, bounded by the server's jute.maxbuffer), keeps those
// that are the encoded form (Path) of a key starting with prefix, and reads
// their queues as Inspect does — the children of the key node, then the
// lowest lock node's data and Stat — up to listReads keys at a time. Keys
// whose queue is empty are left out; the others come back decoded, sorted
// bytewise, each with what Inspect reports. Nodes under the base that Path
// cannot have produced (an application's other nodes) are skipped.
func (d *zkDriver) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	if d.isClosed() {
		return nil, driver.ErrClosed
	}
	if err := d.sync(ctx, d.base); err != nil {
		return nil, err
	}
	kids, err := d.children(ctx, d.base)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, d.wrap(ctx, "listing "+d.base, err)
	}
	var keys []string
	for _, name := range kids.names {
		if key, ok := d.keyOf(name); ok && strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	heads := make([]queueHead, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(listReads)
	for i, key := range keys {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			keyPath := d.keyPath(key)
			if err := d.settle(gctx, keyPath); err != nil {
				return d.wrap(gctx, "listing "+keyPath, err)
			}
			var err error
			heads[i], err = d.head(gctx, keyPath)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, d.wrap(ctx, "listing "+d.base, err)
	}
	var out []driver.KeyInfo
	for i, h := range heads {
		if h.info.Held {
			out = append(out, driver.KeyInfo{Key: keys[i], Info: h.info})
		}
	}
	return out, nil
}

// keyOf returns the key whose node under the base is named name, and
// whether there is one: name must be what Path makes of a valid key.
func (d *zkDriver) keyOf(name string) (string, bool) {
	key, ok := decodeKey(name)
	if !ok || dlock.ValidateKey(key) != nil {
		return "", false
	}
	return key, d.keyPath(key) == strings.TrimRight(d.base, "/")+"/"+name
}

// decodeKey undoes encodeKey's %XX escapes. It does not check that the
// name is encodeKey's (keyOf does, by encoding the key again).
func decodeKey(name string) (string, bool) {
	if !strings.Contains(name, "%") {
		return name, true
	}
	b := make([]byte, 0, len(name))
	for i := 0; i < len(name); i++ {
		if name[i] != '%' {
			b = append(b, name[i])
			continue
		}
		if i+2 >= len(name) {
			return "", false
		}
		hi, ok1 := unhex(name[i+1])
		lo, ok2 := unhex(name[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), true
}

// unhex reads one upper-case hex digit, as encodeKey writes them.
func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// ForceRelease implements driver.ForceReleaser. After the removals of this
// driver's abandoned nodes under the key (as Inspect) and a sync with the
// leader, it reads the holder — the lowest lock node — and deletes that
// node with the data version it read, so it frees exactly the grant it
// reports (a node's name is never used again: sequence numbers only grow).
// When the node went or was rewritten meanwhile it reads again, up to
// forceAttempts times. Four requests in the common case (sync, children,
// get, delete). A key held by shares has every share node read (the gets
// sent together) and deleted in one multi, each delete with the version
// read; the exclusive nodes waiting behind them stay in the queue (its
// waiting writers: the first takes the key). The next waiter, watching that node, takes the lock; the
// fence of its grant, a later czxid, is higher. The freed holder's next
// Refresh or RefreshBatch, which checks that its node exists, reports
// ErrNotHeld.
//
// The session must be allowed to delete children of the key node: with
// the creator ACLs (acl=creator, creator-read) only the identity that
// created it can.
func (d *zkDriver) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	keyPath, err := d.syncQueue(ctx, key, "force release")
	if err != nil {
		return driver.Info{}, err
	}
	for range forceAttempts {
		h, err := d.head(ctx, keyPath)
		if err != nil || !h.info.Held {
			return driver.Info{}, err
		}
		if len(h.shares) > 0 {
			err = d.forceShares(ctx, h)
		} else {
			_, err = call(ctx, func() (struct{}, error) { return struct{}{}, d.conn.Delete(h.path, h.stat.Version) })
		}
		if errors.Is(err, zk.ErrNoNode) || errors.Is(err, zk.ErrBadVersion) {
			continue // released, expired or refreshed with new data: read again
		}
		if err != nil {
			return driver.Info{}, d.wrap(ctx, "deleting "+h.path, err)
		}
		d.scheduleCleanup(keyPath)
		return h.info, nil
	}
	return driver.Info{}, fmt.Errorf("zookeeper: force release %s: the queue kept changing while it was read", keyPath)
}
