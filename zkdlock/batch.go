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

var _ driver.BatchRefresher = (*zkDriver)(nil)

// Bounds of a batched refresh.
const (
	// maxMultiOps and maxMultiBytes bound one multi request: ZooKeeper
	// refuses packets above its jute.maxbuffer (1 MiB by default), and
	// go-zookeeper encodes a request into a 1.5 MiB buffer. Long keys make
	// long paths, so the budget is in bytes as well as in operations.
	maxMultiOps   = 1000
	maxMultiBytes = 256 << 10
	// maxBatchRounds bounds the multis that narrow down which nodes of a
	// failed multi are gone; what is still unknown then is refreshed one
	// lock at a time.
	maxBatchRounds = 12
	// singleRefreshes bounds the one-by-one refreshes in flight at once.
	singleRefreshes = 16
)

// batchItem is one lock of a RefreshBatch call.
type batchItem struct {
	i    int // index in the request slice
	h    *holding
	ttl  time.Duration
	size int // bytes the operation adds to a multi, roughly
}

func (it batchItem) op() any {
	return &zk.CheckVersionRequest{Path: it.h.n.path, Version: -1}
}

// RefreshBatch implements driver.BatchRefresher. It checks every lock as
// Refresh does — the connection still has the session that created the
// lock node, and the node still exists — with one multi request of version
// checks (version -1: the node exists) for up to 1000 locks. A lock whose
// TTL changed is refreshed on its own instead, as Refresh does it (its
// node's data, which holds the TTL, is rewritten). The reply proves that the server heard from the session after the
// send time, and the multi is ordered by the leader, so it sees every
// deletion committed before it.
//
// A multi fails as a whole when one node is gone; its reply then says
// which operation failed and that those before it passed. The rest is
// checked again, in two halves sent together, until every lock has an
// answer, so k lost locks among n cost about 2k·log(n/k) more multis, a
// few round trips of latency. Locks still unresolved after maxBatchRounds
// are refreshed one by one.
func (d *zkDriver) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	errs := make([]error, len(reqs))
	if d.isClosed() {
		for i := range errs {
			errs[i] = driver.ErrClosed
		}
		return errs
	}
	session := d.conn.SessionID()
	var items, single []batchItem
	for i, r := range reqs {
		h := d.lookup(r.Key, r.Token)
		if h == nil {
			errs[i] = fmt.Errorf("%w: %q is not held by this token", driver.ErrNotHeld, r.Key)
			continue
		}
		if h.n.session != session {
			d.drop(h)
			errs[i] = fmt.Errorf("%w: %q: the ZooKeeper session that held it has expired", driver.ErrNotHeld, r.Key)
			continue
		}
		it := batchItem{i: i, h: h, ttl: r.TTL, size: len(h.n.path) + 16}
		d.mu.Lock()
		changed := r.TTL != h.ttl
		d.mu.Unlock()
		if changed {
			// The node's data holds the TTL (what Inspect shows): a
			// refresh of its own rewrites it, serialised with
			// SetMetadata.
			single = append(single, it)
			continue
		}
		items = append(items, it)
	}
	groups := chunk(items)
	for round := 0; len(groups) > 0; round++ {
		if round == maxBatchRounds || ctx.Err() != nil {
			for _, g := range groups {
				single = append(single, g...)
			}
			break
		}
		groups = d.multiRound(ctx, session, groups, errs, &single)
	}
	d.refreshEach(ctx, single, errs)
	return errs
}

// chunk splits items into groups that fit one multi each.
func chunk(items []batchItem) [][]batchItem {
	var groups [][]batchItem
	start, size := 0, 0
	for j, it := range items {
		if j > start && (j-start == maxMultiOps || size+it.size > maxMultiBytes) {
			groups = append(groups, items[start:j])
			start, size = j, 0
		}
		size += it.size
	}
	if start < len(items) {
		groups = append(groups, items[start:])
	}
	return groups
}

// multiResult is the answer to one group's multi.
type multiResult struct {
	res []zk.MultiResponse
	err error
}

// multiRound sends one multi per group, all at once, and records the
// answers in errs. It returns the groups still to check: the part of each
// failed multi after its failing operation, in two halves. Items to be
// refreshed one by one are appended to single.
func (d *zkDriver) multiRound(ctx context.Context, session int64, groups [][]batchItem, errs []error, single *[]batchItem) [][]batchItem {
	results := make([]multiResult, len(groups))
	var wg sync.WaitGroup
	for g, group := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := make([]any, len(group))
			for j, it := range group {
				ops[j] = it.op()
			}
			r, err := call(ctx, func() (multiResult, error) {
				res, err := d.conn.Multi(ops...)
				return multiResult{res, err}, nil
			})
			if err != nil { // ctx ended
				r.err = err
			}
			results[g] = r
		}()
	}
	wg.Wait()
	// A multi sent after the session expired may have run on the
	// connection's next session, which sees the nodes only if they
	// outlived the old one: trust answers only from the same session.
	sameSession := d.conn.SessionID() == session
	var next [][]batchItem
	for g, group := range groups {
		r := results[g]
		if r.err == nil && len(r.res) != len(group) {
			r.err = fmt.Errorf("zkdlock: multi returned %d results, want %d", len(r.res), len(group))
		}
		if len(r.res) != len(group) { // the request as a whole failed
			err := d.wrap(ctx, fmt.Sprintf("refreshing %d locks", len(group)), r.err)
			for _, it := range group {
				errs[it.i] = err
			}
			continue
		}
		if !sameSession {
			for _, it := range group {
				d.drop(it.h)
				errs[it.i] = fmt.Errorf("%w: %q: the ZooKeeper session that held it has expired", driver.ErrNotHeld, it.h.key)
			}
			continue
		}
		// Operations before the first failing one passed; the failing one
		// says why; those after it were not checked.
		failed := len(group)
		for j, op := range r.res {
			if op.Error != nil {
				failed = j
				break
			}
		}
		var rest []batchItem
		for j, it := range group[:failed] {
			switch op := r.res[j]; {
			case op.Stat != nil && op.Stat.EphemeralOwner != session:
				d.drop(it.h)
				errs[it.i] = fmt.Errorf("%w: %q: its lock node is not this session's", driver.ErrNotHeld, it.h.key)
			default:
				errs[it.i] = d.extend(it)
			}
		}
		if failed < len(group) {
			it := group[failed]
			if errors.Is(r.res[failed].Error, zk.ErrNoNode) {
				d.drop(it.h)
				errs[it.i] = fmt.Errorf("%w: %q: its lock node is gone", driver.ErrNotHeld, it.h.key)
			} else {
				*single = append(*single, it) // let Refresh answer
			}
			rest = append(rest, group[failed+1:]...)
		}
		if len(rest) > 0 {
			half := (len(rest) + 1) / 2
			next = append(next, rest[:half])
			if half < len(rest) {
				next = append(next, rest[half:])
			}
		}
	}
	return next
}

// extend moves the lease timer of a lock whose check passed to its TTL from
// now.
func (d *zkDriver) extend(it batchItem) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := it.h
	if h.done {
		return fmt.Errorf("%w: %q: its lease ran out", driver.ErrNotHeld, h.key)
	}
	h.ttl = it.ttl
	h.expires = time.Now().Add(it.ttl)
	h.timer.Reset(it.ttl)
	return nil
}

// refreshEach refreshes items one by one, a few at a time.
func (d *zkDriver) refreshEach(ctx context.Context, items []batchItem, errs []error) {
	sem := make(chan struct{}, singleRefreshes)
	var wg sync.WaitGroup
	for _, it := range items {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[it.i] = d.refreshKeep(ctx, it.h, it.ttl)
		}()
	}
	wg.Wait()
}
