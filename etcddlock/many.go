package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.MultiLocker = (*etcdDriver)(nil)

// manyItem is one request of an AcquireMany: a new entry to put, or the
// lock its token already holds (held), to renew.
type manyItem struct {
	req    driver.Request
	pfx    string
	held   *entry
	l      *lease // the new entry's lease
	name   string
	reused bool
	renew  <-chan error // a keep-alive of a reused lease, when one was due
	rerr   error
}

// AcquireMany implements driver.MultiLocker with one transaction over all
// the keys. Its If holds, for each key, the compare Acquire makes (no entry
// at all under the key's queue prefix: nobody holds, waits or shares), or,
// for a key the token already holds, that its entry is still ours. Its Then
// puts each new key's entry exactly as Acquire does (the same name, on a
// lease of the lock's own, from the pool or granted), so every grant is
// that of an Acquire, with the transaction's revision as its fence. Its
// Else reads each key's first entry, whose lease's TTL is the HolderTTL of
// a key that stood in the way (read after the refusal, in parallel). A key
// the token held is then refreshed, as Acquire's renewal would be.
//
// One request per key is in each branch, and two compares for a key held
// already: more than etcd's --max-txn-ops (the driver assumes its default,
// 128) is refused with an error wrapping errors.ErrUnsupported before
// anything is sent, as is a transaction the server refuses for its size.
func (d *etcdDriver) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	if err := d.check(ctx); err != nil {
		return nil, err
	}
	items := make([]*manyItem, len(reqs))
	cmps := 0
	for i, req := range reqs {
		req.Hints = driver.Hints{}
		it := &manyItem{req: req, pfx: d.queuePrefix(req.Key)}
		if e := d.lookup(req.Key, req.Token); e != nil && !e.share {
			it.held = e
			cmps++
		}
		cmps++
		items[i] = it
	}
	if limit := int(d.txnOps.Load()); cmps > limit {
		return nil, fmt.Errorf("etcd: AcquireMany of %d keys needs %d compares in one transaction, more than %d: %w",
			len(reqs), cmps, limit, errors.ErrUnsupported)
	}
	for attempt := 0; ; attempt++ {
		res, retry, err := d.manyOnce(ctx, items)
		if !retry || attempt > 0 {
			if retry {
				err = d.fail(ctx, "acquire many", errLeaseGone)
			}
			return res, err
		}
	}
}

// manyOnce makes AcquireMany's transaction once. retry reports that a
// reused lease ran out: nothing was written, and a new attempt takes new
// leases.
func (d *etcdDriver) manyOnce(ctx context.Context, items []*manyItem) (res []driver.Result, retry bool, err error) {
	if err := d.manyLeases(ctx, items); err != nil {
		return nil, false, err
	}
	var cmps []clientv3.Cmp
	var puts, gets []clientv3.Op
	for _, it := range items {
		gets = append(gets, clientv3.OpGet(it.pfx+"/", clientv3.WithFirstCreate()...))
		if it.held != nil {
			cmps = append(cmps, it.held.owned(d.leaseOf(it.held))...)
			continue
		}
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(it.pfx+"/"), "=", 0).WithPrefix())
		puts = append(puts, clientv3.OpPut(it.name, it.req.Metadata, clientv3.WithLease(it.l.id)))
		if it.reused && needsRenew(it.l, it.req.TTL) {
			it.renew = d.renewLeaseAsync(ctx, it.l, time.Now().Add(-it.req.TTL/50))
		}
	}
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	cancel()
	gone := isLeaseNotFound(err)
	for _, it := range items {
		if it.renew != nil {
			it.rerr = <-it.renew
			gone = gone || isLeaseNotFound(it.rerr)
		}
	}
	switch {
	case gone:
		// A reused lease ran out; the transaction wrote nothing (it
		// failed, or a lease it used is gone with its entry).
		for _, it := range items {
			if it.l == nil {
				continue
			}
			if isLeaseNotFound(it.rerr) || (err != nil && it.reused) {
				d.leaseGone(it.l, it.name)
			} else if err != nil {
				d.giveBack(it.l, it.name)
			} else {
				d.discard(it.l, it.name, resp.Header.Revision)
			}
		}
		return nil, true, nil
	case err != nil && isTooManyOps(err):
		d.giveBackAll(items)
		return nil, false, fmt.Errorf("etcd %s: acquire many: %w (%w)", d.addr, errors.ErrUnsupported, err)
	case err != nil:
		// The entries may or may not have been written.
		for _, it := range items {
			if it.l != nil {
				d.discard(it.l, it.name, 0)
			}
		}
		return nil, false, d.fail(ctx, "acquire many", err)
	case !resp.Succeeded:
		d.giveBackAll(items)
		res, err := d.manyRefused(ctx, items, resp)
		return res, false, err
	}
	var rerr error
	for _, it := range items {
		rerr = cmpOr(rerr, it.rerr)
	}
	if rerr != nil {
		// A lease's validity is unknown: grant nothing on it.
		for _, it := range items {
			if it.l != nil {
				d.discard(it.l, it.name, resp.Header.Revision)
			}
		}
		return nil, false, rerr
	}
	res = make([]driver.Result, len(items))
	for i, it := range items {
		if it.held != nil {
			if err := d.Refresh(ctx, it.req.Key, it.req.Token, it.req.TTL); err != nil {
				return nil, false, err
			}
			res[i] = driver.Result{Acquired: true, Fence: uint64(it.held.rev), ValidUntil: d.leaseOf(it.held).validUntil(it.req.TTL)}
			continue
		}
		e := newEntry(it.name, resp.Header.Revision, it.req.Metadata, it.l)
		d.remember(it.req.Key, it.req.Token, e)
		res[i] = driver.Result{Acquired: true, Fence: uint64(e.rev), ValidUntil: it.l.validUntil(it.req.TTL)}
	}
	return res, false, nil
}

// cmpOr is the first of a and b that is not nil.
func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// manyLeases takes a lease for each new entry of items, as Acquire does
// (pooled, or granted: the grants in parallel), and names the entry.
func (d *etcdDriver) manyLeases(ctx context.Context, items []*manyItem) error {
	var wg sync.WaitGroup
	errs := make([]error, len(items))
	for i, it := range items {
		it.l, it.name, it.reused, it.renew, it.rerr = nil, "", false, nil, nil
		if it.held != nil {
			continue
		}
		wg.Go(func() {
			it.l, it.name, it.reused, errs[i] = d.leaseFor(ctx, it.req, it.pfx)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		d.giveBackAll(items)
		return err
	}
	return nil
}

// giveBackAll gives back the leases of items, on which nothing was written.
func (d *etcdDriver) giveBackAll(items []*manyItem) {
	for _, it := range items {
		if it.l != nil && (it.rerr == nil || it.l.shared) {
			d.giveBack(it.l, it.name)
		}
		it.l = nil
	}
}

// manyRefused is the outcome of AcquireMany's refused transaction: no key
// granted, and for each key whose queue has an entry that is not the
// token's own, the remaining TTL of that entry's lease as HolderTTL (at
// least 100 ms while the lease is there; etcd counts whole seconds).
func (d *etcdDriver) manyRefused(ctx context.Context, items []*manyItem, resp *clientv3.TxnResponse) ([]driver.Result, error) {
	if len(resp.Responses) != len(items) {
		return nil, d.fail(ctx, "acquire many", fmt.Errorf("transaction answered %d reads of %d", len(resp.Responses), len(items)))
	}
	lease := make([]int64, len(items))
	var ids []int64
	for i, it := range items {
		kvs := resp.Responses[i].GetResponseRange().GetKvs()
		if len(kvs) == 0 || (it.held != nil && string(kvs[0].Key) == it.held.name && kvs[0].CreateRevision == it.held.rev) {
			continue
		}
		if lease[i] = kvs[0].Lease; lease[i] != 0 && !containsID(ids, lease[i]) {
			ids = append(ids, lease[i])
		}
	}
	ttls, err := d.readLeaseTTLs(ctx, ids)
	if err != nil {
		return nil, d.fail(ctx, "acquire many: lease TTL", err)
	}
	res := make([]driver.Result, len(items))
	for i := range items {
		if ttl, ok := ttls[lease[i]]; ok && lease[i] != 0 && ttl >= 0 {
			res[i].HolderTTL = max(ttl, 100*time.Millisecond)
		}
	}
	return res, nil
}
