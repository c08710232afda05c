package sqlitedlock

import (
	"context"
	"sync"

	"github.com/dlock-go/dlock/internal/sqllease"
)

// SQLite cannot tell one process about another's writes, so release
// notifications reach waiters in the same process only: every driver on the
// same database file shares one hub, found in a process-wide registry by the
// file's absolute path, and a release wakes the waiters of that table and
// key. Waiters in other processes fall back to the portable layer's backoff,
// bounded by the holder's remaining lease.

var hubs = struct {
	sync.Mutex
	m map[string]*hub
}{m: map[string]*hub{}}

// hub fans release notifications out to the waiters of one database file,
// by table and key. Every waiter of a key in this process is equivalent,
// so a release wakes one of them (sqllease.Hub's One): waking them all would
// only make all but one fail their attempt, each a write to the file. The
// woken waiter, when it takes the key, wakes the next one with its own
// release; one that leaves without trying passes its wake-up on. Shared
// grants change this twice: a shared grant that leaves room for more
// passes the wake-up on at once (so that the readers waiting behind a
// writer all come in, one after the other), and the release of a shared
// grant while a writer waits wakes every waiter of the key (the writer's
// turn has come, but one woken reader would only be refused again and
// keep the wake-up). Waiters whose wake-up is lost still poll.
type hub struct {
	sqllease.Hub
	id   string
	refs int // drivers using the hub; guarded by hubs
}

// acquireHub returns the hub for id, creating it, and counts a user.
func acquireHub(id string) *hub {
	hubs.Lock()
	defer hubs.Unlock()
	h := hubs.m[id]
	if h == nil {
		h = &hub{Hub: sqllease.Hub{One: true}, id: id}
		hubs.m[id] = h
	}
	h.refs++
	return h
}

// releaseHub drops one user of h and forgets it after the last.
func releaseHub(h *hub) {
	hubs.Lock()
	defer hubs.Unlock()
	h.refs--
	if h.refs == 0 && hubs.m[h.id] == h {
		delete(hubs.m, h.id)
	}
}

// notify wakes one waiter of key in table, one without a wake-up pending.
func (h *hub) notify(table, key string) { h.Notify(table + "\x00" + key) }

// notifyAll wakes every waiter of key in table.
func (h *hub) notifyAll(table, key string) { h.NotifyEach(table + "\x00" + key) }

// observe registers an observer of key in table (sqllease.Hub.Observe).
func (h *hub) observe(table, key string) (<-chan struct{}, func()) {
	return h.Observe(table + "\x00" + key)
}

// subscribe registers a waiter of key in table.
func (h *hub) subscribe(table, key string) (<-chan struct{}, func()) {
	return h.Watch(table + "\x00" + key)
}

// WatchReleases implements driver.Notifier. It reports releases made by
// clients of this process on the same database file and table; releases by
// other processes and expiries are not reported.
func (d *sqliteDriver) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if err := d.Check(ctx); err != nil {
		return nil, nil, err
	}
	ch, stop := d.hub.subscribe(d.table, key)
	return ch, stop, nil
}

// ObserveReleases implements driver.ReleaseObserver: the releases
// WatchReleases reports, for a watcher that never takes the key, so that
// it takes no waiter's wake-up (a release wakes one waiter, see hub).
func (d *sqliteDriver) ObserveReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if err := d.Check(ctx); err != nil {
		return nil, nil, err
	}
	ch, stop := d.hub.observe(d.table, key)
	return ch, stop, nil
}
