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

var _ driver.MultiLocker = (*zkDriver)(nil)

// manyKey is one request of an AcquireMany: a lock node to create, or the
// token's lock of the key (held), to check and renew.
type manyKey struct {
	req     driver.Request
	keyPath string
	held    *holding
	guid    string
	data    []byte
	n       *node // created
}

// AcquireMany implements driver.MultiLocker with one multi over all the
// keys, which ZooKeeper applies atomically. For each key it creates a lock
// node exactly as Acquire does (the key node too when it is believed
// absent) with the same empty write to the key node, whose Stat in the
// reply counts the key node's children right after the create: one child
// is ours alone, at the head of the queue, granted; more mean someone
// holds, waits or shares. For a key the token already holds, the multi
// checks its node instead, and the lock is refreshed after the grant.
//
// When every key is alone the multi is the grant: one round trip for all
// the keys, every fence the multi's zxid (each node's czxid). Otherwise a
// second multi deletes every node it created, while the queues of the keys
// in the way are listed and their first node's TTL read for HolderTTL. So a
// refusal leaves no node behind, but its nodes exist between the two
// multis: a TryLock of another client meeting one is refused, a waiter
// (dlock's, zk.Lock's) queues behind it and is woken by its delete, as
// behind a holder that leaves at once.
//
// A key node whose ACL forbids the write, or more keys than one multi may
// carry (jute.maxbuffer), give an error wrapping errors.ErrUnsupported with
// nothing changed.
func (d *zkDriver) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	if d.isClosed() {
		return nil, driver.ErrClosed
	}
	keys := make([]*manyKey, len(reqs))
	ops, size := 0, 0
	for i, req := range reqs {
		k := &manyKey{req: req, keyPath: d.keyPath(req.Key), held: d.lookupAs(req.Key, req.Token, false)}
		if k.held == nil || k.held.n.session != d.conn.SessionID() {
			if err := k.fresh(); err != nil {
				return nil, err
			}
			ops += 3
			size += 3*len(k.keyPath) + len(k.data) + 160
		} else {
			ops++
			size += len(k.held.n.path) + 32
		}
		keys[i] = k
	}
	if ops > maxMultiOps || size > maxMultiBytes {
		return nil, fmt.Errorf("zookeeper: AcquireMany of %d keys needs a multi of %d operations, about %d bytes, more than one may carry: %w",
			len(reqs), ops, size, errors.ErrUnsupported)
	}
	for _, k := range keys {
		if k.held == nil {
			if err := d.settle(ctx, k.keyPath); err != nil {
				return nil, d.wrap(ctx, "joining "+k.keyPath, err)
			}
		}
	}
	sent := time.Now()
	err := d.sendMany(ctx, keys)
	if err != nil {
		if errors.Is(err, zk.ErrNoAuth) {
			err = fmt.Errorf("%w (%w)", errors.ErrUnsupported, err)
		}
		return nil, d.wrap(ctx, "creating lock nodes", err)
	}
	busy := false
	for _, k := range keys {
		busy = busy || (k.n != nil && !k.n.alone)
	}
	if busy {
		return d.refuseMany(ctx, keys), nil
	}
	out := make([]driver.Result, len(keys))
	for i, k := range keys {
		if k.held != nil {
			if err := d.refresh(ctx, k.held, k.req.TTL, k.req.Metadata); err != nil {
				d.releaseMany(keys[i:])
				return nil, err
			}
			out[i] = driver.Result{Acquired: true, Fence: k.held.n.fence, ValidUntil: driver.ValidUntil(sent, k.req.TTL)}
			continue
		}
		d.noteQueue(k.n)
		if out[i], err = d.grant(ctx, k.req, k.n, sent); err != nil {
			d.releaseMany(keys[i+1:])
			return nil, err
		}
	}
	return out, nil
}

// sendMany runs createMany until it answers or ctx ends or the driver
// closes. Nodes it may have left are deleted: at once in the background
// when ctx ended (each key's removal waited for, up to leaveWait, as a
// waiter's that gives up, and by the driver's later calls on the key), or
// found by their guids after a connection failure.
func (d *zkDriver) sendMany(ctx context.Context, keys []*manyKey) error {
	ch := make(chan error, 1)
	go func() { ch <- d.createMany(keys) }()
	select {
	case err := <-ch:
		if err != nil && transient(err) {
			d.reapMany(keys)
		}
		return err
	case <-ctx.Done():
	case <-d.closeCh:
	}
	outcome := sync.OnceValue(func() error { return <-ch })
	for _, k := range keys {
		if k.held != nil {
			continue
		}
		d.goLeave(k.keyPath, func() {
			switch err := outcome(); {
			case err == nil && k.n != nil:
				d.reap(k.keyPath, k.n.path, "")
			case err != nil && transient(err):
				d.reap(k.keyPath, "", k.guid)
			}
		})
	}
	if d.isClosed() {
		return driver.ErrClosed
	}
	return ctx.Err()
}

// createMany sends AcquireMany's multi, blocking, and sets each created
// node (its fence and whether it is alone under its key node). A key node
// found absent, or created meanwhile, is created (or no longer) in the
// next try, up to maxCreateAttempts; a session expiry (the nodes died
// with it) is tried again too.
func (d *zkDriver) createMany(keys []*manyKey) error {
	var lastErr error
	for range maxCreateAttempts {
		var ops []any
		first := make([]int, len(keys)) // index of each key's first op
		parent := make([]bool, len(keys))
		for i, k := range keys {
			first[i] = len(ops)
			if k.held != nil {
				ops = append(ops, &zk.CheckVersionRequest{Path: k.held.n.path, Version: -1})
				continue
			}
			if parent[i] = d.hintAbsent(k.keyPath); parent[i] {
				ops = append(ops, &zk.CreateRequest{Path: k.keyPath, Acl: d.acl, Flags: zk.FlagPersistent})
			}
			ops = append(ops,
				&zk.CreateRequest{Path: k.keyPath + "/" + protectedPrefix + k.guid + "-lock-", Data: k.data, Acl: d.acl, Flags: zk.FlagEphemeralSequential},
				&zk.SetDataRequest{Path: k.keyPath, Version: -1})
		}
		res, err := d.conn.Multi(ops...)
		if err == nil && len(res) != len(ops) {
			err = fmt.Errorf("zkdlock: multi returned %d results, want %d", len(res), len(ops))
		}
		if err == nil {
			for i, k := range keys {
				if k.held != nil {
					continue
				}
				j := first[i]
				if parent[i] {
					j++
					d.setHint(k.keyPath, false)
				}
				n, err := d.newNode(k.keyPath, res[j].String, parent[i])
				if err != nil {
					return err
				}
				if stat := res[j+1].Stat; stat != nil {
					n.fence = uint64(stat.Mzxid)
					n.alone = stat.NumChildren == 1
					n.keyCzxid, n.siblings = stat.Czxid, stat.NumChildren
				}
				k.n = n
			}
			return nil
		}
		lastErr = err
		switch {
		case errors.Is(err, zk.ErrNodeExists), errors.Is(err, zk.ErrNoNode):
			// Which key nodes are there: the failing op says, for one.
			for i, k := range keys {
				end := len(ops)
				if i+1 < len(keys) {
					end = first[i+1]
				}
				for _, r := range res[min(first[i], len(res)):min(end, len(res))] {
					switch {
					case k.held != nil && errors.Is(r.Error, zk.ErrNoNode):
						// The token's node is gone: the lock was lost.
						// Take the key anew.
						if err := k.fresh(); err != nil {
							return err
						}
					case errors.Is(r.Error, zk.ErrNodeExists):
						d.setHint(k.keyPath, false)
					case errors.Is(r.Error, zk.ErrNoNode) && parent[i]:
						if err := d.ensurePath(parentOf(k.keyPath)); err != nil {
							return err
						}
					case errors.Is(r.Error, zk.ErrNoNode):
						d.setHint(k.keyPath, true)
					}
				}
			}
			// The failing op names one key node; learn of the others at
			// once, in one round trip, rather than one multi each.
			d.probeKeys(keys)
		case errors.Is(err, zk.ErrSessionExpired):
		default:
			return err
		}
	}
	return fmt.Errorf("no lock nodes after %d attempts (the key nodes kept changing): %w", maxCreateAttempts, lastErr)
}

// probeKeys reads whether each key node of keys to be taken anew exists,
// the reads sent together, and records it in the keys' hints.
func (d *zkDriver) probeKeys(keys []*manyKey) {
	var wg sync.WaitGroup
	for _, k := range keys {
		if k.held != nil {
			continue
		}
		wg.Go(func() {
			if ok, _, err := d.conn.Exists(k.keyPath); err == nil {
				d.setHint(k.keyPath, !ok)
			}
		})
	}
	wg.Wait()
}

// fresh makes k a key to take anew, with a lock node to create.
func (k *manyKey) fresh() error {
	guid, err := newGUID()
	if err != nil {
		return err
	}
	k.held, k.guid, k.data = nil, guid, encodeData(k.req.Token, k.req.TTL, k.req.Metadata)
	return nil
}

// refuseMany deletes the nodes AcquireMany created, in one multi (in the
// background, retried, when that fails), while it reads the TTL of the
// first node of each key's queue that had others in it, and returns the
// refusal.
func (d *zkDriver) refuseMany(ctx context.Context, keys []*manyKey) []driver.Result {
	out := make([]driver.Result, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		if k.n == nil || k.n.alone {
			continue
		}
		wg.Go(func() {
			kids, err := d.children(ctx, k.keyPath)
			if err != nil {
				return
			}
			if pos := position(kids.names, k.n.name, k.n.seq); pos.lowest != "" && pos.lowest != k.n.name {
				out[i].HolderTTL = d.nodeTTL(ctx, k.keyPath, pos.lowest)
			}
		})
	}
	d.releaseMany(keys)
	wg.Wait()
	for i, k := range keys {
		if k.n != nil && !k.n.alone && out[i].HolderTTL <= 0 {
			// The holder left meanwhile; say still which key was in the
			// way.
			out[i].HolderTTL = time.Millisecond
		}
	}
	return out
}

// releaseMany deletes the nodes of keys that AcquireMany created, in one
// multi, or in the background, each retried until it is gone, when that
// fails.
func (d *zkDriver) releaseMany(keys []*manyKey) {
	var ops []any
	for _, k := range keys {
		if k.n != nil {
			ops = append(ops, &zk.DeleteRequest{Path: k.n.path, Version: -1})
		}
	}
	if len(ops) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abandonWait)
	defer cancel()
	if _, err := call(ctx, func() ([]zk.MultiResponse, error) { return d.conn.Multi(ops...) }); err != nil {
		for _, k := range keys {
			if k.n != nil {
				d.goReap(k.keyPath, k.n.path, "")
			}
		}
		return
	}
	for _, k := range keys {
		if k.n != nil {
			d.scheduleCleanup(k.keyPath)
		}
	}
}

// reapMany deletes, in the background, the nodes a multi with an unknown
// outcome may have created, found by their guids.
func (d *zkDriver) reapMany(keys []*manyKey) {
	for _, k := range keys {
		if k.held == nil {
			d.goReap(k.keyPath, "", k.guid)
		}
	}
}
