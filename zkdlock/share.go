package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.SharedLocker = (*zkDriver)(nil)

// A share node (a semaphore's permit, an RW lock's reader) is an
// ephemeral sequential child of the key node beside the exclusive lock
// nodes, named "_c_<guid>-share<limit>-lock-<sequence>": zk.Lock and
// Curator's InterProcessMutex read its sequence number after the last
// "lock-", so they queue behind shares as behind any lock node, and dlock
// tells it from an exclusive node by the "-share<limit>-" before it.

// shareTag is what a share node's name carries between its guid and
// "lock-", for a share of limit.
func shareTag(limit int) string { return "share" + strconv.Itoa(limit) + "-" }

// parseShare reports whether the lock node called name is a share node,
// and its limit.
func parseShare(name string) (limit int, ok bool) {
	i := strings.LastIndex(name, "lock-")
	if i < 1 || name[i-1] != '-' {
		return 0, false
	}
	pre := name[:i-1]
	j := strings.LastIndex(pre, "-share")
	if j < 0 {
		return 0, false
	}
	digits := pre[j+len("-share"):]
	if digits == "" || len(digits) > 8 || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	limit, err := strconv.Atoi(digits)
	return limit, err == nil
}

// qnode is one lock node of a key's queue, as its name describes it.
type qnode struct {
	name  string
	seq   int
	share bool
	limit int // a share node's
}

// sortQueue returns the lock nodes among a key node's children, in
// sequence order; names that are not lock nodes are skipped.
func sortQueue(names []string) []qnode {
	q := make([]qnode, 0, len(names))
	for _, name := range names {
		seq, err := parseSeq(name)
		if err != nil {
			continue
		}
		c := qnode{name: name, seq: seq}
		c.limit, c.share = parseShare(name)
		q = append(q, c)
	}
	slices.SortFunc(q, func(a, b qnode) int { return a.seq - b.seq })
	return q
}

// grantedRun returns the nodes of q (sorted, not empty) that hold the key:
// the first when it is exclusive; else the share nodes that lead the
// queue, before its first exclusive node, with the first one's limit, at
// most that many. A share node just created and about to be refused (it
// deletes itself) can be among them for that moment.
func grantedRun(q []qnode) []qnode {
	if !q[0].share {
		return q[:1]
	}
	run := []qnode{q[0]}
	for _, c := range q[1:] {
		if !c.share {
			break
		}
		if c.limit != q[0].limit {
			continue
		}
		if q[0].limit > 0 && len(run) == q[0].limit {
			break
		}
		run = append(run, c)
	}
	return run
}

// AcquireShared implements driver.SharedLocker. A token that holds a share
// of the key on this driver renews it, as Refresh does (one request). Else
// the attempt creates its share node, in the transaction Acquire's create
// is (a share node alone under the key is granted at once: one request),
// and lists the queue. The nodes before its own decide, as they were all
// created before it:
//
//   - an exclusive node (the holder, or a writer waiting in the queue:
//     writer preference) refuses it;
//   - a share node of another limit fails it with driver.ErrLimitMismatch;
//   - limit or more share nodes refuse it;
//   - else it is granted, with its node's czxid as the fence.
//
// A share not granted deletes its node before returning (in the
// background when ctx ended), and reads the TTL of the queue's first node
// for HolderTTL, in flight together with the delete.
func (d *zkDriver) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	if res, ok, err := d.reshare(ctx, req); ok || err != nil {
		return res, err
	}
	keyPath := d.keyPath(req.Key)
	if err := d.settle(ctx, keyPath); err != nil {
		return driver.Result{}, d.wrap(ctx, "joining "+keyPath, err)
	}
	limit := req.Limit
	sent := time.Now()
	n, err := d.createAs(ctx, keyPath, shareTag(limit), encodeShareData(req.Token, req.TTL, limit, req.Metadata))
	if err != nil {
		return driver.Result{}, err
	}
	if n.alone {
		return d.grantAs(ctx, req.Request, n, sent, &limit)
	}
	sent = time.Now()
	kids, err := d.childrenAndFence(ctx, n)
	if err != nil {
		d.giveUp(ctx, n)
		return driver.Result{}, d.wrap(ctx, "listing "+n.keyPath, err)
	}
	q := sortQueue(kids.names)
	if !slices.ContainsFunc(q, func(c qnode) bool { return c.name == n.name }) {
		return driver.Result{}, fmt.Errorf("%w: zookeeper %s: lock node %s vanished (session expired?)", driver.ErrUnavailable, d.servers, n.path)
	}
	ok, err := shareGranted(q, n.name, req.Key, limit)
	switch {
	case err != nil:
		d.giveUp(ctx, n)
		return driver.Result{}, err
	case !ok:
		return d.refuse(ctx, n, q[0]), nil
	}
	return d.grantAs(ctx, req.Request, n, sent, &limit)
}

// reshare starts a shared attempt: it checks req's limit and, when req's
// token holds a share of the key on this driver already, renews it, as
// Refresh does (one request); ok then reports the attempt done.
func (d *zkDriver) reshare(ctx context.Context, req driver.SharedRequest) (res driver.Result, ok bool, err error) {
	if d.isClosed() {
		return driver.Result{}, false, driver.ErrClosed
	}
	if req.Limit < 0 || req.Limit > driver.MaxLimit {
		return driver.Result{}, false, fmt.Errorf("%w: zkdlock: shared limit %d is outside [0, %d]", driver.ErrInvalidOption, req.Limit, driver.MaxLimit)
	}
	if h := d.lookupAs(req.Key, req.Token, true); h != nil && h.limit == req.Limit {
		sent := time.Now()
		err := d.refresh(ctx, h, req.TTL, req.Metadata)
		if err == nil {
			return driver.Result{Acquired: true, Fence: h.n.fence, ValidUntil: driver.ValidUntil(sent, req.TTL)}, true, nil
		}
		if !errors.Is(err, driver.ErrNotHeld) {
			return driver.Result{}, false, err
		}
	}
	return driver.Result{}, false, nil
}

// shareGranted decides for the share node called own, of limit, in the
// sorted queue q that holds it: the nodes before it were all created
// before it. A share node of another limit among them fails it with
// driver.ErrLimitMismatch; an exclusive node (the holder, or a writer
// waiting: writer preference), or limit or more share nodes, leave it
// waiting (false); else it is granted.
func shareGranted(q []qnode, own, key string, limit int) (bool, error) {
	before := q[:slices.IndexFunc(q, func(c qnode) bool { return c.name == own })]
	if i := slices.IndexFunc(before, func(c qnode) bool { return c.share && c.limit != limit }); i >= 0 {
		return false, fmt.Errorf("%w: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, key, before[i].limit, limit)
	}
	if slices.ContainsFunc(before, func(c qnode) bool { return !c.share }) {
		return false, nil
	}
	return limit == 0 || len(before) < limit, nil
}

// refuse removes n, which was not granted, and returns the refusal, with
// the TTL of first (the queue's first node, which stands in the way) as
// HolderTTL, read while the delete is under way.
func (d *zkDriver) refuse(ctx context.Context, n *node, first qnode) driver.Result {
	ttl := make(chan time.Duration, 1)
	go func() { ttl <- d.nodeTTL(ctx, n.keyPath, first.name) }()
	d.giveUp(ctx, n)
	return driver.Result{HolderTTL: <-ttl}
}

// nodeTTL is the TTL a lock node's data gives (the session timeout for
// another client's node), or 0 when it cannot be read.
func (d *zkDriver) nodeTTL(ctx context.Context, keyPath, name string) time.Duration {
	data, err := call(ctx, func() ([]byte, error) {
		data, _, err := d.conn.Get(keyPath + "/" + name)
		return data, err
	})
	if err != nil {
		return 0
	}
	ttl, _, ok := decodeData(data)
	if !ok {
		return d.sessionTimeout()
	}
	return ttl
}

// Holders implements driver.SharedLocker. It reads the queue as Inspect
// does (after the same sync): the holders are the exclusive node at its
// head, or the share nodes that lead it (grantedRun), each read for its
// fence (czxid), TTL and metadata; WritersWaiting counts the exclusive
// nodes behind the head. Requests: the sync, the listing, one read per
// holder (sent together).
func (d *zkDriver) Holders(ctx context.Context, key string) (driver.Holders, error) {
	keyPath, err := d.syncQueue(ctx, key, "reading the holders of")
	if err != nil {
		return driver.Holders{}, err
	}
	h, err := d.head(ctx, keyPath)
	return h.holders, err
}

// forceShares deletes every share node in h.shares in one multi, each with
// the version read, so it frees exactly what it read or nothing
// (zk.ErrNoNode, zk.ErrBadVersion when one changed meanwhile).
func (d *zkDriver) forceShares(ctx context.Context, h queueHead) error {
	ops := make([]any, len(h.shares))
	for i, rn := range h.shares {
		ops[i] = &zk.DeleteRequest{Path: rn.path, Version: rn.stat.Version}
	}
	_, err := call(ctx, func() ([]zk.MultiResponse, error) { return d.conn.Multi(ops...) })
	return err
}
