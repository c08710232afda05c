package etcddlock

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

// Shared leases.
//
// A lock the portable layer keeps refreshing (driver.Hints.AutoRefresh) is
// attached to a lease the driver shares with its other such locks, as
// concurrency.Session shares one lease among its mutexes: one keep-alive per
// shared lease and refresh round, instead of one per lock. The driver keeps
// a short list of shared leases per lease TTL (whole seconds). Each entry is
// named after its lease (Q/<lease ID>), so one shared lease can back one
// entry per queue; a second lock on a key whose name is taken on every
// shared lease of the list gets the next one (a new grant, up to
// maxShared), and beyond that a lease of its own.
//
// A lease's names map says which entry names carrying its ID may exist in
// etcd: false while a lock of this driver uses the name, true once the name
// is burned — an entry of that name may be left behind (a delete whose
// outcome is unknown, an entry found replaced), or a late delete of it may
// still be applied. A name is used again on the same lease only after its
// entry's deletion was confirmed; a burned name never is, so a late or
// repeated delete can never remove a newer lock. Burned entries are deleted
// in the background (deleteAsync), and go with the lease in any case.
//
// The lease stays while locks use it. When the last one goes it stays idle
// in the list, for the next lock of that TTL, while at least half its TTL
// is left on the server (the same rule as the pool of leases of their own);
// then it is revoked. Close revokes every shared lease no held lock uses.
//
// Loss of a shared lease (expired, revoked) loses every lock on it. Every
// refresh of a lock on it sends (or joins) a keep-alive of the lease, so
// they all see the same outcome.

// maxShared bounds the shared leases per TTL.
const maxShared = 16

// kaCall is a keep-alive of a shared lease that callers can join.
type kaCall struct {
	start time.Time // before the keep-alive was sent
	done  chan struct{}
	err   error // set before done closes
}

// renewShared makes sure a keep-alive of the shared lease l sent no earlier
// than after is answered: it joins one in flight that started at or after
// after, or sends a new one. It returns what keepAlive returns: nil,
// errLeaseGone or the transport error, not yet wrapped; or ctx.Err().
func (d *etcdDriver) renewShared(ctx context.Context, l *lease, after time.Time) error {
	l.mu.Lock()
	c := l.ka
	if c == nil || c.start.Before(after) {
		c = &kaCall{start: time.Now(), done: make(chan struct{})}
		l.ka = c
		l.mu.Unlock()
		go func() {
			// Not bound to one caller's ctx: others may join.
			c.err = d.ka.keepAlive(d.ctx, []*lease{l})[0]
			l.mu.Lock()
			if l.ka == c {
				l.ka = nil
			}
			l.mu.Unlock()
			close(c.done)
		}()
	} else {
		l.mu.Unlock()
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// renewLease sends (or, for a shared lease, joins) a keep-alive of l sent
// no earlier than after. On success the lease is confirmed from the send
// time; when the server no longer knows it, it is marked lost and the error
// matches errLeaseGone; other errors are wrapped.
func (d *etcdDriver) renewLease(ctx context.Context, l *lease, after time.Time) error {
	if !l.shared {
		return d.renew(ctx, l)
	}
	err := d.renewShared(ctx, l, after)
	if err == nil || errors.Is(err, errLeaseGone) {
		return err
	}
	return d.fail(ctx, "keep lease alive", err)
}

// renewLeaseAsync runs renewLease in the background; the result arrives on
// the returned channel.
func (d *etcdDriver) renewLeaseAsync(ctx context.Context, l *lease, after time.Time) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- d.renewLease(ctx, l, after) }()
	return ch
}

// leaseFor returns the lease for a new entry of req in the queue pfx and
// the entry's name: a shared lease when the portable layer keeps the lock
// refreshed and one can be had, else one of the lock's own (pooled or
// granted). reused reports a lease that was not granted just now, which may
// need a keep-alive before it backs a grant.
func (d *etcdDriver) leaseFor(ctx context.Context, req driver.Request, pfx string) (l *lease, name string, reused bool, err error) {
	sec := leaseSeconds(req.TTL)
	if req.Hints.AutoRefresh {
		l, err := d.sharedLease(ctx, sec, func(id clientv3.LeaseID) string { return entryName(pfx, id) })
		if err != nil {
			return nil, "", false, err
		}
		if l != nil {
			return l, entryName(pfx, l.id), true, nil
		}
	}
	l, reused, err = d.takeLease(ctx, sec)
	if err != nil {
		return nil, "", false, err
	}
	return l, entryName(pfx, l.id), reused, nil
}

// sharedLease returns a shared lease of sec seconds on which the entry name
// nameOf gives for it is free, with the name reserved and a reference taken
// for the caller (give them back with unshare). It grants a new shared lease when no
// lease in the list has the name free, one grant at a time per TTL. It
// returns nil when the list is full: the caller then uses a lease of its
// own.
func (d *etcdDriver) sharedLease(ctx context.Context, sec int64, nameOf func(clientv3.LeaseID) string) (l *lease, err error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, driver.ErrClosed
		}
		var stale []*lease
		list := d.shared[sec]
		keep := list[:0]
		for _, s := range list {
			switch {
			case s.isLost():
				// Its locks find out by themselves.
			case s.refs == 0 && time.Since(s.confirmedAt()) >= time.Duration(sec)*time.Second/2:
				stale = append(stale, s)
			default:
				keep = append(keep, s)
				if l == nil {
					if _, used := s.names[nameOf(s.id)]; !used {
						l = s
					}
				}
			}
		}
		clear(list[len(keep):])
		d.shared[sec] = keep
		if l != nil {
			l.refs++
			l.names[nameOf(l.id)] = false
		}
		var wait chan struct{}
		grant := false
		if l == nil && len(keep) < maxShared {
			if wait = d.granting[sec]; wait == nil {
				wait = make(chan struct{})
				d.granting[sec] = wait
				grant = true
			}
		}
		d.mu.Unlock()
		for _, s := range stale {
			// Idle and too old to reuse: nothing of ours is on it but
			// entries left behind, which revoking removes.
			d.revokeAsync(s)
		}
		if l != nil || wait == nil {
			return l, nil
		}
		if !grant {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, d.fail(ctx, "grant lease", ctx.Err())
			}
		}
		nl, err := d.grant(ctx, sec)
		d.mu.Lock()
		delete(d.granting, sec)
		closed := d.closed
		if err == nil && !closed {
			// Taken at once by the call that granted it: over a link whose
			// round trip is half the TTL or more, it would be found stale
			// on the next pass, and granting again would loop.
			nl.shared, nl.refs = true, 1
			nl.names = map[string]bool{nameOf(nl.id): false}
			d.shared[sec] = append(d.shared[sec], nl)
		}
		d.mu.Unlock()
		close(wait)
		if err != nil {
			return nil, err
		}
		if closed {
			d.revokeAsync(nl)
			return nil, driver.ErrClosed
		}
		return nl, nil
	}
}

// unshare gives back a reference to the shared lease l taken by
// sharedLease, and frees (burn false) or burns the entry name, if any. A
// lease no longer in the list that nobody uses any more is revoked.
func (d *etcdDriver) unshare(l *lease, name string, burn bool) {
	d.mu.Lock()
	revoke := d.unshareLocked(l, name, burn)
	d.mu.Unlock()
	if revoke {
		d.revokeAsync(l)
	}
}

// unshareLocked is unshare with d.mu held; it reports whether l should be
// revoked.
func (d *etcdDriver) unshareLocked(l *lease, name string, burn bool) bool {
	if l.refs > 0 {
		l.refs--
	}
	d.nameLocked(l, name, burn)
	if l.refs > 0 || l.isLost() {
		return false
	}
	for _, s := range d.shared[l.sec] {
		if s == l {
			return false
		}
	}
	return true
}

// nameLocked frees or burns name on the shared lease l; d.mu is held.
func (d *etcdDriver) nameLocked(l *lease, name string, burn bool) {
	if name == "" {
		return
	}
	if burn {
		l.names[name] = true
	} else if !l.names[name] {
		delete(l.names, name)
	}
}

// deleteAsync deletes an entry left behind on the shared lease l, in the
// background: only the incarnation created at rev when rev is known, else
// whatever entry of the name is attached to l (the name is burned on l, so
// it can only be ours).
// While etcd cannot be reached it tries again, with a growing pause, until
// the lease is gone (it then took the entry along) or the driver is closed.
// then, if not nil, runs when it is done.
func (d *etcdDriver) deleteAsync(name string, rev int64, l *lease, then func()) {
	if !d.startBackground() {
		if then != nil {
			then()
		}
		return
	}
	go func() {
		defer d.bg.Done()
		if then != nil {
			defer then()
		}
		start := time.Now()
		pause := 50 * time.Millisecond
		for !l.isLost() {
			// Short attempts, as in revokeAsync.
			ctx, cancel := context.WithTimeout(d.ctx, time.Second)
			var err error
			deleted := true
			if rev > 0 {
				_, err = d.cli.Txn(ctx).
					If(clientv3.Compare(clientv3.CreateRevision(name), "=", rev)).
					Then(clientv3.OpDelete(name)).
					Commit()
			} else {
				// Whatever entry of that name is on l: a share's
				// slot name (family.go) is not unique to the lease.
				var resp *clientv3.TxnResponse
				resp, err = d.cli.Txn(ctx).
					If(clientv3.Compare(clientv3.LeaseValue(name), "=", l.id)).
					Then(clientv3.OpDelete(name)).
					Commit()
				deleted = err == nil && resp.Succeeded
			}
			cancel()
			if err == nil && !deleted {
				// The write of an attempt whose outcome is unknown
				// may still land after this delete (a cancelled
				// request already on its way): delete again on a
				// short schedule. The name is burned, so whatever
				// has it is that attempt's entry.
				next, ok := nextUnknownDelete(start)
				if !ok || !sleepCtx(d.ctx, time.Until(next)) {
					return
				}
				continue
			}
			if err == nil || !unavailable(err) || !sleepCtx(d.ctx, pause) {
				return
			}
			pause = min(2*pause, time.Second)
		}
	}()
}

// unknownDeletes is when the deletes of an entry whose write had an unknown
// outcome are sent, from the first one, until one deletes it: about a
// second, like the portable layer's release of an unknown outcome.
var unknownDeletes = []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond}

// nextUnknownDelete returns the next moment of unknownDeletes after now,
// counted from start, or false when the schedule is over.
func nextUnknownDelete(start time.Time) (time.Time, bool) {
	now := time.Now()
	for _, at := range unknownDeletes {
		if t := start.Add(at); t.After(now) {
			return t, true
		}
	}
	return time.Time{}, false
}
