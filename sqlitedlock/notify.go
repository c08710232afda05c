package sqlitedlock

import (
	"context"
	"sync"

	"github.com/dlock-go/dlock/driver"
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

// hub fans release notifications out to the waiters of one database file.
type hub struct {
	id   string
	refs int // drivers using the hub; guarded by hubs

	mu    sync.Mutex
	watch map[string]map[chan struct{}]struct{} // by table + "\x00" + key
}

// acquireHub returns the hub for id, creating it, and counts a user.
func acquireHub(id string) *hub {
	hubs.Lock()
	defer hubs.Unlock()
	h := hubs.m[id]
	if h == nil {
		h = &hub{id: id, watch: map[string]map[chan struct{}]struct{}{}}
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

// notify wakes one waiter of key: one that has no wake-up pending, if any.
// Every waiter of the key in this process is equivalent, so waking them
// all would only make all but one fail their attempt, each a write to the
// file. The woken waiter, when it takes the key, wakes the next one with its
// own release; one that leaves without trying passes its wake-up on (see
// subscribe). Waiters whose wake-up is lost still poll.
func (h *hub) notify(table, key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wakeOneLocked(table + "\x00" + key)
}

func (h *hub) wakeOneLocked(key string) {
	for ch := range h.watch[key] {
		if len(ch) == 0 {
			ch <- struct{}{} // cannot block: buffer of one, empty, h.mu held
			return
		}
	}
}

// subscribe registers a waiter of key.
func (h *hub) subscribe(table, key string) (<-chan struct{}, func()) {
	key = table + "\x00" + key
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.watch[key] == nil {
		h.watch[key] = map[chan struct{}]struct{}{}
	}
	h.watch[key][ch] = struct{}{}
	h.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			delete(h.watch[key], ch)
			select {
			case <-ch:
				// A wake-up this waiter will not use goes to another.
				h.wakeOneLocked(key)
			default:
			}
			if len(h.watch[key]) == 0 {
				delete(h.watch, key)
			}
		})
	}
}

// WatchReleases implements driver.Notifier. It reports releases made by
// clients of this process on the same database file and table; releases by
// other processes and expiries are not reported.
func (d *sqliteDriver) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if d.closed.Load() {
		return nil, nil, driver.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ch, stop := d.hub.subscribe(d.table, key)
	return ch, stop, nil
}
