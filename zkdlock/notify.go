package zkdlock

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.Notifier = (*zkDriver)(nil)

// Release notifications (driver.Notifier), for the waiters the portable
// layer runs itself: shared attempts (semaphore permits, RW readers), and
// exclusive attempts that are not queued (a Lock whose retry strategy does
// not wait). Exclusive waits go to AcquireQueued, which watches its
// predecessor instead.
//
// Every grant of a key is a child of its key node, deleted when the grant
// ends: by Release, by ForceRelease, by the lease timer of its holder, or
// by ZooKeeper with the holder's session. So a children watch of the key
// node sees every end of a grant (and, spuriously, every node that joins).
// ZooKeeper watches fire once: the driver sets the watch again after each
// event, before it passes the event on, so that nothing after the event is
// missed. It keeps one such watch per key, however many watches of the key
// its callers hold, all over the driver's one connection.

// zkWatch is the driver's watch of one key node and the callers' watches
// it serves.
type zkWatch struct {
	stop  chan struct{} // closed when the last caller's watch ends
	ready chan struct{} // closed once the first watch is set, or failed
	err   error         // why it failed; set before ready closes

	subs map[chan struct{}]struct{} // guarded by zkDriver.mu
	// latest is the listing the newest watch was set with (nil while the
	// key node is absent, or after a session ended); guarded by
	// zkDriver.mu. Every notification follows the setting of a watch,
	// and so a listing newer than the change that fired the one before.
	latest *listing
}

// latestAfter returns w's newest listing when it was sent after t, else nil.
func (d *zkDriver) latestAfter(w *zkWatch, t time.Time) *listing {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l := w.latest; l != nil && l.sent.After(t) {
		return l
	}
	return nil
}

// setLatest records l as w's newest listing.
func (d *zkDriver) setLatest(w *zkWatch, l *listing) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w.latest = l
}

// WatchReleases implements driver.Notifier. It returns once ZooKeeper has
// set the key's watch (one round trip for the first watch of a key, none
// while the key is watched already). When the key node does not exist the
// watch waits for its creation instead.
func (d *zkDriver) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	_, ch, stop, err := d.subscribe(ctx, d.keyPath(key))
	return ch, stop, err
}

// subscribe is WatchReleases for keyPath; it returns the driver's watch
// of the key too, for its listings.
func (d *zkDriver) subscribe(ctx context.Context, keyPath string) (*zkWatch, <-chan struct{}, func(), error) {
	ch := make(chan struct{}, 1)
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, nil, nil, driver.ErrClosed
	}
	w := d.watches[keyPath]
	first := w == nil
	if first {
		w = &zkWatch{stop: make(chan struct{}), ready: make(chan struct{}), subs: map[chan struct{}]struct{}{}}
		d.watches[keyPath] = w
		d.bg.Add(1)
	}
	w.subs[ch] = struct{}{}
	d.mu.Unlock()
	if first {
		go d.watchKey(keyPath, w)
	}
	stop := sync.OnceFunc(func() { d.unwatch(keyPath, w, ch) })
	select {
	case <-w.ready:
	case <-ctx.Done():
		stop()
		return nil, nil, nil, d.wrap(ctx, "watching "+keyPath, ctx.Err())
	}
	if w.err != nil {
		stop()
		return nil, nil, nil, w.err
	}
	return w, ch, stop, nil
}

// unwatch ends the caller's watch ch of keyPath, and the driver's watch
// with its last one.
func (d *zkDriver) unwatch(keyPath string, w *zkWatch, ch chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(w.subs, ch)
	if len(w.subs) == 0 {
		if d.watches[keyPath] == w {
			delete(d.watches, keyPath)
		}
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
	}
}

// notify wakes every caller's watch of w.
func (d *zkDriver) notify(w *zkWatch) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// watchKey keeps a watch on keyPath for w until w stops or the driver
// closes: a children watch while the key node exists, else a watch for its
// creation. Each event sets the watch again, then notifies. When the first
// watch cannot be set, the callers waiting for it get the error and w is
// dropped.
func (d *zkDriver) watchKey(keyPath string, w *zkWatch) {
	defer d.bg.Done()
	confirmed := false
	pause := 20 * time.Millisecond
	for {
		ev, l, err := d.armWatch(keyPath)
		d.setLatest(w, l)
		switch {
		case err == nil && !confirmed:
			confirmed = true
			close(w.ready)
		case err == nil:
			d.notify(w)
		case !confirmed:
			w.err = d.wrap(context.Background(), "watching "+keyPath, err)
			d.mu.Lock()
			if d.watches[keyPath] == w {
				delete(d.watches, keyPath)
			}
			d.mu.Unlock()
			close(w.ready)
			return
		}
		if err == nil {
			pause = 20 * time.Millisecond
			select {
			case e := <-ev:
				if e.Type == zk.EventNotWatching {
					// The session ended: set the watch again on the new
					// one, after a pause.
					d.setLatest(w, nil)
					d.notify(w)
					break
				}
				continue // set again at once, then notify
			case <-w.stop:
				return
			case <-d.closeCh:
				return
			}
		}
		select {
		case <-time.After(pause):
		case <-w.stop:
			return
		case <-d.closeCh:
			return
		}
		pause = min(2*pause, time.Second)
	}
}

// armWatch sets one watch on keyPath: on its children, with the listing
// the watch was set with, or, when it does not exist, on its creation
// (with no listing).
func (d *zkDriver) armWatch(keyPath string) (<-chan zk.Event, *listing, error) {
	for {
		sent := time.Now()
		names, stat, ev, err := d.conn.ChildrenW(keyPath)
		if err == nil {
			return ev, &listing{kids: children{names, stat}, sent: sent}, nil
		}
		if !errors.Is(err, zk.ErrNoNode) {
			return ev, nil, err
		}
		ok, _, ev, err := d.conn.ExistsW(keyPath)
		if err != nil || !ok {
			return ev, nil, err
		}
		// Created meanwhile: watch its children. (The exists watch stays
		// set; it fires once, spuriously.)
	}
}
