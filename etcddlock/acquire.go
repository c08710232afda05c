package etcddlock

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

// Acquire takes key only if its queue is empty, in one transaction that adds
// the entry only when no other entry exists.
func (d *etcdDriver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	if err := d.check(ctx); err != nil {
		return driver.Result{}, err
	}
	pfx := d.queuePrefix(req.Key)
	for attempt := 0; ; attempt++ {
		l, name, reused, err := d.leaseFor(ctx, req, pfx)
		if err != nil {
			return driver.Result{}, err
		}
		var renewed <-chan error
		if reused && needsRenew(l, req.TTL) {
			renewed = d.renewLeaseAsync(ctx, l, time.Now().Add(-req.TTL/50))
		}
		rctx, cancel := d.rpcCtx(ctx)
		lo, hi := shareRange(pfx)
		resp, err := d.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(pfx+"/"), "=", 0).WithPrefix()).
			Then(clientv3.OpPut(name, req.Metadata, clientv3.WithLease(l.id))).
			// The shares in the way, if any (family.go), for HolderTTL.
			Else(clientv3.OpGet(lo, clientv3.WithRange(hi), clientv3.WithKeysOnly(), clientv3.WithLimit(ttlSample))).
			Commit()
		cancel()
		var rerr error
		if renewed != nil {
			rerr = <-renewed
		}
		if isLeaseNotFound(err) || isLeaseNotFound(rerr) {
			// A reused lease ran out: whatever it held is gone. Try
			// once more with a new lease.
			d.leaseGone(l, name)
			if attempt == 0 {
				continue
			}
			return driver.Result{}, d.fail(ctx, "acquire", errLeaseGone)
		}
		if err != nil {
			// The entry may or may not have been written.
			d.discard(l, name, 0)
			return driver.Result{}, d.fail(ctx, "acquire", err)
		}
		if !resp.Succeeded {
			if rerr == nil || l.shared {
				d.giveBack(l, name)
			}
			var res driver.Result
			if len(resp.Responses) == 1 {
				if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
					if res.HolderTTL, err = d.shortestTTL(ctx, kvs); err != nil {
						return driver.Result{}, d.fail(ctx, "acquire: lease TTL", err)
					}
				}
			}
			return res, nil
		}
		if rerr != nil {
			// The lease's validity is unknown: do not grant on it.
			d.discard(l, name, resp.Header.Revision)
			return driver.Result{}, rerr
		}
		e := newEntry(name, resp.Header.Revision, req.Metadata, l)
		d.remember(req.Key, req.Token, e)
		return driver.Result{Acquired: true, Fence: uint64(e.rev), ValidUntil: l.validUntil(req.TTL)}, nil
	}
}

// needsRenew reports whether a pooled lease needs a keep-alive before it
// backs a grant of ttl: when its last confirmation is older than 2% of ttl,
// so that a grant's validity is never more than that short of the full TTL.
func needsRenew(l *lease, ttl time.Duration) bool {
	return time.Since(l.confirmedAt()) >= ttl/50
}

// Inspect reads the queue: its first entry is the holder, and TTL what is
// left of its lease (0 for an entry whose lease just ran out). When that
// entry is a share (family.go), the holders are the shares: Inspect then
// reads them all and reports the newest one's fence and metadata and the
// longest TTL among them, with the exclusive entries as waiters.
func (d *etcdDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	if err := d.check(ctx); err != nil {
		return driver.Info{}, err
	}
	kv, in, err := d.head(ctx, key, "inspect")
	for range 3 {
		if err != nil || kv == nil || !isShare(d.queuePrefix(key), kv.Key) {
			break
		}
		sin, _, ok, serr := d.shareInfo(ctx, key, "inspect")
		if serr != nil || ok {
			return sin, serr
		}
		// The shares ran out meanwhile: read the queue again.
		kv, in, err = d.head(ctx, key, "inspect")
	}
	if err != nil || kv == nil || kv.Lease == 0 {
		return in, err
	}
	ttl, err := d.leaseTTL(ctx, kv.Lease)
	if err != nil {
		return driver.Info{}, d.fail(ctx, "inspect", err)
	}
	in.TTL = max(ttl, 0)
	return in, nil
}

// head reads key's queue in one range read: the first entry (lowest create
// revision) is the holder, returned with what Inspect reports of it but
// its TTL; the entries after it are waiters. An empty queue gives a nil
// entry and Held false. op names the read in errors.
func (d *etcdDriver) head(ctx context.Context, key, op string) (*mvccpb.KeyValue, driver.Info, error) {
	rctx, cancel := d.rpcCtx(ctx)
	defer cancel()
	resp, err := d.cli.Get(rctx, d.queuePrefix(key)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return nil, driver.Info{}, d.fail(ctx, op, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, driver.Info{}, nil
	}
	kv := resp.Kvs[0]
	return kv, driver.Info{
		Held:     true,
		Fence:    uint64(kv.CreateRevision),
		Metadata: string(kv.Value),
		Waiters:  int(resp.Count) - 1,
	}, nil
}
