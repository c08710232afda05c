package etcddlock

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.MetadataSetter = (*etcdDriver)(nil)

// SetMetadata implements driver.MetadataSetter as concurrency.Election's
// Proclaim does: one transaction that puts the new value on the lock's key,
// on its lease, if the key is still this lock's (same create revision, same
// lease). The create revision, and so the fence and the queue position,
// stay; the lease is not renewed. Watchers of the key see the put.
func (d *etcdDriver) SetMetadata(ctx context.Context, key, token, metadata string) error {
	e, l, err := d.held(ctx, key, token)
	if err != nil {
		return err
	}
	defer e.unlock()
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).If(e.owned(l)...).
		Then(clientv3.OpPut(e.name, metadata, clientv3.WithLease(l.id))).
		Commit()
	cancel()
	if err != nil {
		return d.fail(ctx, "set metadata", err)
	}
	if !resp.Succeeded {
		d.forget(key, token, e)
		return fmt.Errorf("%w: %q: the key is gone or belongs to another lease", driver.ErrNotHeld, key)
	}
	e.value = metadata
	return nil
}
