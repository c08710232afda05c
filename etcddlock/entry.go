package etcddlock

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// entryID names a lock held through this driver.
type entryID struct{ key, token string }

// entry is a held lock: its etcd key, create revision (the fence) and the
// lease it is attached to.
type entry struct {
	name  string
	rev   int64
	value string
	// lease is the lease the key is attached to. After a Refresh that
	// needed a longer lease it is not the one whose ID the name carries.
	lease *lease
	// shared is the shared lease whose ID the name carries, for a lock
	// taken on a shared lease; nil for a lock taken on a lease of its own.
	shared *lease
	// share is set for a shared grant (family.go), with the limit it was
	// taken with.
	share bool
	limit int
	// busy serialises Refresh and Release of the entry (a watchdog refresh
	// may run while Unlock releases).
	busy chan struct{}
}

// newEntry returns the entry of a lock taken on lease l.
func newEntry(name string, rev int64, value string, l *lease) *entry {
	e := &entry{name: name, rev: rev, value: value, lease: l, busy: make(chan struct{}, 1)}
	if l.shared {
		e.shared = l
	}
	return e
}

// lock takes the entry for one Refresh or Release, waiting until ctx ends.
func (e *entry) lock(ctx context.Context) error {
	select {
	case e.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// unlock gives back what lock took.
func (e *entry) unlock() { <-e.busy }

// remember records e as the lock of key and token, replacing (and
// dropping) an older entry of theirs, and now and then drops the locks whose
// lease has certainly run out on the server.
func (d *etcdDriver) remember(key, token string, e *entry) {
	var revoke []*lease
	d.mu.Lock()
	id := entryID{key, token}
	if old := d.entries[id]; old != nil && old != e && d.dropLocked(old, false) {
		revoke = append(revoke, old.shared)
	}
	d.entries[id] = e
	if len(d.entries) >= d.sweepAt {
		// Locks lost without a later Unlock would stay here forever:
		// drop those whose lease has certainly run out on the server.
		for id, e := range d.entries {
			if time.Since(e.lease.confirmedAt()) > time.Duration(e.lease.sec)*time.Second+time.Minute {
				delete(d.entries, id)
				if d.dropLocked(e, false) {
					revoke = append(revoke, e.shared)
				}
			}
		}
		d.sweepAt = max(minSweep, 2*len(d.entries))
	}
	d.mu.Unlock()
	for _, l := range revoke {
		d.revokeAsync(l)
	}
}

// minSweep is the number of remembered locks from which remember looks for
// long-expired ones.
const minSweep = 256

// lookup returns the remembered lock of key and token, or nil.
func (d *etcdDriver) lookup(key, token string) *entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.entries[entryID{key, token}]
}

// forget drops a lock that was lost, or whose entry may be left behind,
// from the driver's memory.
func (d *etcdDriver) forget(key, token string, e *entry) { d.drop(key, token, e, false) }

// drop drops a lock from the driver's memory. For a lock taken on a shared
// lease it gives back the lock's reference to that lease (while the entry
// is still attached to it) and frees the entry name when deleted is set
// (its deletion was confirmed), else burns it.
func (d *etcdDriver) drop(key, token string, e *entry, deleted bool) {
	revoke := false
	d.mu.Lock()
	if d.entries[entryID{key, token}] == e {
		delete(d.entries, entryID{key, token})
		revoke = d.dropLocked(e, deleted)
	}
	d.mu.Unlock()
	if revoke {
		d.revokeAsync(e.shared)
	}
}

// dropLocked does drop's work on the shared lease of e, which is no longer
// remembered; d.mu is held. It reports whether that lease should be revoked.
func (d *etcdDriver) dropLocked(e *entry, deleted bool) bool {
	if e.shared == nil {
		return false
	}
	if e.lease == e.shared {
		return d.unshareLocked(e.shared, e.name, !deleted)
	}
	d.nameLocked(e.shared, e.name, !deleted)
	return false
}

// giveBack returns the lease of an attempt that wrote no entry: to the
// pool, or to the shared lease's list with the entry name freed.
func (d *etcdDriver) giveBack(l *lease, name string) {
	if l.shared {
		d.unshare(l, name, false)
		return
	}
	d.putBack(l)
}

// discard gives up the lease of an attempt that may have left an entry of
// name (created at rev, when known) that nobody holds. A lease of its own
// is revoked, which removes the entry; on a shared lease the name is burned
// and the entry deleted in the background.
func (d *etcdDriver) discard(l *lease, name string, rev int64) {
	if !l.shared {
		d.revokeAsync(l)
		return
	}
	d.unshare(l, name, true)
	d.deleteAsync(name, rev, l, nil)
}

// leaseGone records that the server no longer knows the lease l of an
// attempt: every entry on it is gone.
func (d *etcdDriver) leaseGone(l *lease, name string) {
	l.markLost()
	if l.shared {
		d.unshare(l, name, true)
	}
}

// leaseOf returns the lease e is attached to now.
func (d *etcdDriver) leaseOf(e *entry) *lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	return e.lease
}

// owned is the comparison that holds while the entry is ours: the same
// incarnation of the key (create revision) on our lease l. A retried
// release can never delete a newer lock.
func (e *entry) owned(l *lease) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(e.name), "=", e.rev),
		clientv3.Compare(clientv3.LeaseValue(e.name), "=", l.id),
	}
}
