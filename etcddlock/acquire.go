package etcddlock

import (
	"context"
	"time"

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
		resp, err := d.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(pfx+"/"), "=", 0).WithPrefix()).
			Then(clientv3.OpPut(name, req.Metadata, clientv3.WithLease(l.id))).
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
			return driver.Result{}, nil
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

// Inspect reads the queue: its first entry is the holder.
func (d *etcdDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	if err := d.check(ctx); err != nil {
		return driver.Info{}, err
	}
	pfx := d.queuePrefix(key) + "/"
	rctx, cancel := d.rpcCtx(ctx)
	defer cancel()
	resp, err := d.cli.Get(rctx, pfx, clientv3.WithFirstCreate()...)
	if err != nil {
		return driver.Info{}, d.fail(ctx, "inspect", err)
	}
	if len(resp.Kvs) == 0 {
		return driver.Info{Waiters: 0}, nil
	}
	kv := resp.Kvs[0]
	in := driver.Info{
		Held:     true,
		Fence:    uint64(kv.CreateRevision),
		Metadata: string(kv.Value),
		Waiters:  int(resp.Count) - 1,
	}
	if kv.Lease != 0 {
		tr, err := d.cli.TimeToLive(rctx, clientv3.LeaseID(kv.Lease))
		if err != nil {
			return driver.Info{}, d.fail(ctx, "inspect", err)
		}
		if tr.TTL > 0 {
			in.TTL = time.Duration(tr.TTL) * time.Second
		}
	}
	return in, nil
}
