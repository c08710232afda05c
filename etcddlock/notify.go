package etcddlock

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.Notifier = (*etcdDriver)(nil)

// Release notifications (driver.Notifier), for the waiters the portable
// layer runs itself: shared attempts (semaphore permits, RW readers), and
// exclusive attempts that are not queued (a Lock whose retry strategy does
// not wait). Exclusive waits go to AcquireQueued, which watches its
// predecessor instead.
//
// Every grant of a key is an entry under its queue prefix, deleted when
// the grant ends: by Release, by ForceRelease, or by etcd with its lease
// (expiry, revoke). So one watch of the prefix for DELETE events sees
// every end of a grant, whoever made it. The driver keeps one such watch
// per key, however many watches of the key its callers hold; etcd's client
// carries all of them over one gRPC watch stream.

// watchGroup is the driver's watch of one key's queue prefix and the
// callers' watches it serves.
type watchGroup struct {
	ctx    context.Context // ends the etcd watch
	cancel context.CancelFunc
	ready  chan struct{} // closed once the etcd watch is confirmed, or failed
	err    error         // why it failed; set before ready closes

	subs map[chan struct{}]struct{} // guarded by etcdDriver.wmu
}

// WatchReleases implements driver.Notifier. It returns once etcd has
// confirmed the key's watch (one round trip for the first watch of a key,
// none while the key is watched already), so that no release after it
// returns is missed while the watch stays up. When the watch breaks (a
// leader change, a compaction), the driver sets it up again and notifies,
// since a release may have been missed meanwhile.
func (d *etcdDriver) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if err := d.check(ctx); err != nil {
		return nil, nil, err
	}
	ch := make(chan struct{}, 1)
	d.wmu.Lock()
	g := d.watches[key]
	first := g == nil
	if first {
		if !d.startBackground() {
			d.wmu.Unlock()
			return nil, nil, driver.ErrClosed
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(d.ctx))
		g = &watchGroup{ctx: wctx, cancel: cancel, ready: make(chan struct{}), subs: map[chan struct{}]struct{}{}}
		d.watches[key] = g
	}
	g.subs[ch] = struct{}{}
	d.wmu.Unlock()
	if first {
		go d.watchKey(key, g)
	}
	stop := sync.OnceFunc(func() { d.unwatch(key, g, ch) })
	select {
	case <-g.ready:
	case <-ctx.Done():
		stop()
		return nil, nil, d.fail(ctx, "watch releases", ctx.Err())
	}
	if g.err != nil {
		stop()
		return nil, nil, g.err
	}
	return ch, stop, nil
}

// unwatch ends the caller's watch ch of key, and the driver's watch with
// its last one.
func (d *etcdDriver) unwatch(key string, g *watchGroup, ch chan struct{}) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	delete(g.subs, ch)
	if len(g.subs) == 0 {
		g.cancel()
		if d.watches[key] == g {
			delete(d.watches, key)
		}
	}
}

// notify wakes every caller's watch of g.
func (d *etcdDriver) notify(g *watchGroup) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	for ch := range g.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// watchKey runs the etcd watch of key's queue prefix for g until g ends:
// it notifies g's watches of every deletion under the prefix, and sets the
// watch up again when it breaks. When the first set-up fails, the watches
// waiting for it get the error and g is dropped.
func (d *etcdDriver) watchKey(key string, g *watchGroup) {
	defer d.bg.Done()
	defer g.cancel()
	pfx := d.queuePrefix(key) + "/"
	confirmed := false
	pause := 20 * time.Millisecond
	for g.ctx.Err() == nil {
		wctx, wcancel := context.WithCancel(g.ctx)
		wch := d.cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
		cctx, cancel := context.WithTimeout(wctx, d.reqTimeout)
		err := awaitCreated(cctx, wch)
		cancel()
		switch {
		case err == nil && !confirmed:
			confirmed = true
			close(g.ready)
		case err == nil:
			// Up again: a release may have come while it was down.
			d.notify(g)
		case !confirmed:
			if cctx.Err() != nil {
				err = cctx.Err()
			}
			g.err = d.fail(cctx, "watch releases", err)
			wcancel()
			d.wmu.Lock()
			if d.watches[key] == g {
				delete(d.watches, key)
			}
			d.wmu.Unlock()
			close(g.ready)
			return
		}
		if err == nil {
			pause = 20 * time.Millisecond
			for wr := range wch {
				if wr.Err() != nil || wr.Canceled {
					break
				}
				if deleted(wr, 0) {
					d.notify(g)
				}
			}
			if g.ctx.Err() != nil {
				wcancel()
				return
			}
			d.notify(g)
		}
		wcancel()
		if !sleepCtx(g.ctx, pause) {
			return
		}
		pause = min(2*pause, time.Second)
	}
}
