package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.BatchRefresher = (*etcdDriver)(nil)

// defaultTxnOps is etcd's default limit on the operations of one
// transaction (--max-txn-ops). A server configured lower makes the driver
// use smaller transactions (see checkOwned).
const defaultTxnOps = 128

// batchItem is one lock of a RefreshBatch call that is refreshed in the
// batch: its entry (locked for the call) and lease.
type batchItem struct {
	i     int // index in the requests
	e     *entry
	l     *lease
	owned bool
	err   error // the check's transport error
}

// RefreshBatch implements driver.BatchRefresher. For every lock it does what
// Refresh does — a keep-alive of the lock's lease and a check that its entry
// still exists with its create revision on that lease — but for the whole
// batch at once: one keep-alive per distinct lease (so one for all the
// locks on a shared lease, joined by concurrent calls where possible; the
// leases of their own back to back over the driver's keep-alive streams),
// and the checks are reads in as few transactions as etcd's limit on
// operations per transaction allows (128 by default), sent in parallel with
// the keep-alives and with each other. A lock's result is nil only when its
// lease's keep-alive succeeded and its entry is still ours; every lock on a
// lease that is gone gets ErrNotHeld.
//
// A lock whose Refresh or Release is in progress, or whose TTL needs a
// longer lease, is refreshed on its own, in parallel.
func (d *etcdDriver) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	start := time.Now()
	errs := make([]error, len(reqs))
	if err := d.check(ctx); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	var (
		items  []*batchItem
		single sync.WaitGroup
		seen   = map[*entry]int{}
		dups   [][2]int // request i has the entry of request j
	)
	for i, r := range reqs {
		e := d.lookup(r.Key, r.Token)
		if e == nil {
			errs[i] = fmt.Errorf("%w: %q is not held by this token on this client", driver.ErrNotHeld, r.Key)
			continue
		}
		if j, ok := seen[e]; ok {
			dups = append(dups, [2]int{i, j})
			continue
		}
		seen[e] = i
		if !e.tryLock() {
			// Busy: Refresh waits for it, without holding up the batch.
			single.Add(1)
			go func() {
				defer single.Done()
				errs[i] = d.Refresh(ctx, r.Key, r.Token, r.TTL)
			}()
			continue
		}
		if d.lookup(r.Key, r.Token) != e {
			e.unlock()
			errs[i] = fmt.Errorf("%w: %q is not held by this token on this client", driver.ErrNotHeld, r.Key)
			continue
		}
		l := d.leaseOf(e)
		if l.isLost() {
			e.unlock()
			d.forget(r.Key, r.Token, e)
			errs[i] = fmt.Errorf("%w: %q: its lease expired or was revoked", driver.ErrNotHeld, r.Key)
			continue
		}
		if leaseSeconds(r.TTL) > l.sec {
			// The entry moves to a longer lease: Refresh does that.
			e.unlock()
			single.Add(1)
			go func() {
				defer single.Done()
				errs[i] = d.Refresh(ctx, r.Key, r.Token, r.TTL)
			}()
			continue
		}
		items = append(items, &batchItem{i: i, e: e, l: l})
	}
	if len(items) > 0 {
		d.refreshItems(ctx, start, reqs, items, errs)
	}
	single.Wait()
	for _, p := range dups {
		errs[p[0]] = errs[p[1]]
	}
	return errs
}

// refreshItems keeps the items' leases alive and checks their entries, in
// parallel, then sets their results and unlocks their entries. A shared
// lease gets one keep-alive sent after start, whatever the number of its
// locks (joined by concurrent calls), and its result is every such lock's.
func (d *etcdDriver) refreshItems(ctx context.Context, start time.Time, reqs []driver.RefreshRequest, items []*batchItem, errs []error) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.checkOwned(ctx, items)
	}()
	var (
		own    []*lease // leases of their own, one per item
		ownIdx []int
		shared = map[*lease]*error{}
	)
	for j, it := range items {
		if !it.l.shared {
			own = append(own, it.l)
			ownIdx = append(ownIdx, j)
		} else if shared[it.l] == nil {
			res := new(error)
			shared[it.l] = res
			wg.Add(1)
			go func() {
				defer wg.Done()
				*res = d.renewShared(ctx, it.l, start)
			}()
		}
	}
	kerrs := make([]error, len(items))
	if len(own) > 0 {
		for k, err := range d.ka.keepAlive(ctx, own) {
			kerrs[ownIdx[k]] = err
		}
	}
	wg.Wait()
	for j, it := range items {
		if res := shared[it.l]; res != nil {
			kerrs[j] = *res
		}
	}
	for j, it := range items {
		r := reqs[it.i]
		switch kerr := kerrs[j]; {
		case errors.Is(kerr, errLeaseGone):
			d.forget(r.Key, r.Token, it.e)
			errs[it.i] = fmt.Errorf("%w: %q: its lease expired or was revoked", driver.ErrNotHeld, r.Key)
		case it.err != nil:
			errs[it.i] = d.fail(ctx, "refresh", it.err)
		case !it.owned:
			d.forget(r.Key, r.Token, it.e)
			errs[it.i] = fmt.Errorf("%w: %q: the key is gone or belongs to another lease", driver.ErrNotHeld, r.Key)
		case kerr != nil:
			errs[it.i] = d.fail(ctx, "keep lease alive", kerr)
		}
		it.e.unlock()
	}
}

// checkOwned reads the items' entries, in transactions of at most
// d.txnOps reads sent in parallel, and sets each item's owned (the entry
// exists with its create revision on its lease) or err. The reads are
// linearizable, so no member answers from a view older than our own grants.
// A transaction refused for having too many operations is split, and the
// smaller size kept for later calls.
func (d *etcdDriver) checkOwned(ctx context.Context, items []*batchItem) {
	n := int(d.txnOps.Load())
	var wg sync.WaitGroup
	for len(items) > 0 {
		chunk := items[:min(n, len(items))]
		items = items[len(chunk):]
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.checkChunk(ctx, chunk)
		}()
	}
	wg.Wait()
}

func (d *etcdDriver) checkChunk(ctx context.Context, items []*batchItem) {
	ops := make([]clientv3.Op, len(items))
	for j, it := range items {
		ops[j] = clientv3.OpGet(it.e.name, clientv3.WithKeysOnly())
	}
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).Then(ops...).Commit()
	cancel()
	if err != nil && len(items) > 1 && isTooManyOps(err) {
		half := len(items) / 2
		shrink(&d.txnOps, int64(half))
		d.checkChunk(ctx, items[:half])
		d.checkChunk(ctx, items[half:])
		return
	}
	if err == nil && len(resp.Responses) != len(items) {
		err = fmt.Errorf("transaction answered %d reads of %d", len(resp.Responses), len(items))
	}
	for j, it := range items {
		if err != nil {
			it.err = err
			continue
		}
		kvs := resp.Responses[j].GetResponseRange().GetKvs()
		it.owned = len(kvs) == 1 && kvs[0].CreateRevision == it.e.rev && clientv3.LeaseID(kvs[0].Lease) == it.l.id
	}
}

func isTooManyOps(err error) bool {
	return errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrGRPCTooManyOps) ||
		rpctypes.ErrorDesc(err) == rpctypes.ErrGRPCTooManyOps.Error()
}

// shrink lowers v to n, if n is smaller and positive.
func shrink(v *atomic.Int64, n int64) {
	for {
		cur := v.Load()
		if n < 1 || n >= cur || v.CompareAndSwap(cur, n) {
			return
		}
	}
}

// tryLock takes the entry's lock if it is free.
func (e *entry) tryLock() bool {
	select {
	case e.busy <- struct{}{}:
		return true
	default:
		return false
	}
}
