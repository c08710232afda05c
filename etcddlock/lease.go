package etcddlock

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

// A lease of this driver. A lease of its own backs exactly one queue entry
// at a time; a shared lease (see shared.go) backs the entries of many
// auto-refreshed locks, each of another key. Its validity on the server is
// known from the send time of the last request that confirmed it (its grant
// or a keep-alive): the server ends it no earlier than that plus its TTL,
// because the server received the request after it was sent.
type lease struct {
	id  clientv3.LeaseID
	sec int64 // TTL in seconds, as requested in the grant
	// shared is set, before the lease is published, for a shared lease.
	shared bool

	// Guarded by the driver's mu, for shared leases only.
	refs  int             // locks attached, or being attached, to the lease
	names map[string]bool // see sharedLease

	mu        sync.Mutex
	confirmed time.Time
	lost      bool
	ka        *kaCall // a keep-alive of a shared lease in flight
}

func (l *lease) confirm(sent time.Time) {
	l.mu.Lock()
	if sent.After(l.confirmed) {
		l.confirmed = sent
	}
	l.mu.Unlock()
}

func (l *lease) confirmedAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.confirmed
}

func (l *lease) markLost() {
	l.mu.Lock()
	l.lost = true
	l.mu.Unlock()
}

func (l *lease) isLost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// validUntil is the deadline on the local monotonic clock before which the
// lease, and so a key attached to it, is alive on the server for a lock of
// the given TTL: the last confirmation plus the TTL, minus the portable
// layer's drift allowance.
func (l *lease) validUntil(ttl time.Duration) time.Time {
	return driver.ValidUntil(l.confirmedAt(), ttl)
}

// leaseSeconds rounds a TTL up to etcd's whole seconds.
// It cannot overflow, whatever the TTL.
func leaseSeconds(ttl time.Duration) int64 {
	sec := int64(ttl / time.Second)
	if ttl%time.Second > 0 {
		sec++
	}
	return sec
}

// errLeaseGone reports that the server no longer knows the lease: it
// expired or was revoked, and every key attached to it is gone.
var errLeaseGone = errors.New("lease expired or revoked")

func isLeaseNotFound(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) ||
		rpctypes.ErrorDesc(err) == rpctypes.ErrGRPCLeaseNotFound.Error() || errors.Is(err, errLeaseGone))
}

// maxPooled bounds the idle leases a driver keeps per TTL.
const maxPooled = 64

// takeLease returns a lease of sec seconds for a new queue entry: an idle
// one from the pool while it is fresh, else a new grant. pooled reports
// which.
func (d *etcdDriver) takeLease(ctx context.Context, sec int64) (l *lease, pooled bool, err error) {
	d.mu.Lock()
	stack := d.pool[sec]
	for len(stack) > 0 {
		l = stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		// Reuse while the server still has at least half the TTL left;
		// older ones are left to expire (they hold no keys).
		if !l.isLost() && time.Since(l.confirmedAt()) < time.Duration(sec)*time.Second/2 {
			break
		}
		l = nil
		stack = stack[:0] // the rest are older still
	}
	if len(stack) == 0 {
		delete(d.pool, sec)
	} else {
		d.pool[sec] = stack
	}
	d.mu.Unlock()
	if l != nil {
		return l, true, nil
	}
	l, err = d.grant(ctx, sec)
	return l, false, err
}

func (d *etcdDriver) grant(ctx context.Context, sec int64) (*lease, error) {
	rctx, cancel := d.rpcCtx(ctx)
	defer cancel()
	sent := time.Now()
	resp, err := d.cli.Grant(rctx, sec)
	if err != nil {
		return nil, d.fail(ctx, "grant lease", err)
	}
	// The server may grant more than asked (its minimum TTL); never less.
	return &lease{id: resp.ID, sec: sec, confirmed: sent}, nil
}

// putBack returns an idle lease (holding no keys) to the pool.
func (d *etcdDriver) putBack(l *lease) {
	if l.isLost() || time.Since(l.confirmedAt()) >= time.Duration(l.sec)*time.Second/2 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || len(d.pool[l.sec]) >= maxPooled {
		return
	}
	d.pool[l.sec] = append(d.pool[l.sec], l)
}

// renew sends one keep-alive for l, over the driver's shared keep-alive
// stream. On success the lease is confirmed from the send time; when the
// server no longer knows the lease it is marked lost and the error matches
// errLeaseGone.
func (d *etcdDriver) renew(ctx context.Context, l *lease) error {
	err := d.ka.keepAlive(ctx, []*lease{l})[0]
	if err == nil || errors.Is(err, errLeaseGone) {
		return err
	}
	return d.fail(ctx, "keep lease alive", err)
}

// keepAlive renews l every interval until ctx ends, while its holder waits
// in a queue. When the server says the lease is gone it closes lost and
// returns. Transport errors are retried sooner. A shared lease gets
// nothing when it was confirmed within the last half interval (other locks
// on it keep it alive), and joins a keep-alive of it already in flight.
func (d *etcdDriver) keepAlive(ctx context.Context, l *lease, interval time.Duration, lost chan<- struct{}) {
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.shared {
			if l.isLost() {
				close(lost)
				return
			}
			if time.Since(l.confirmedAt()) < interval/2 {
				t.Reset(interval / 2)
				continue
			}
		}
		err := d.renewLease(ctx, l, time.Now().Add(-interval/4))
		switch {
		case err == nil:
			t.Reset(interval)
		case errors.Is(err, errLeaseGone):
			close(lost)
			return
		default:
			t.Reset(max(interval/8, 10*time.Millisecond))
		}
	}
}

// startBackground counts a background task in d.bg and reports true,
// unless the driver is closed (then the task must not start).
func (d *etcdDriver) startBackground() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.bg.Add(1)
	return true
}

// revokeAsync revokes a lease nobody uses any more, in the background, which
// also deletes any entry still attached to it. While etcd cannot be reached
// it tries again, with a growing pause, until the lease would have run out
// on its own (nobody keeps it alive) or the driver is closed. then, if not
// nil, runs when it is done.
func (d *etcdDriver) revokeAsync(l *lease, then ...func()) {
	l.markLost()
	if !d.startBackground() {
		return
	}
	go func() {
		defer d.bg.Done()
		defer func() {
			for _, f := range then {
				f()
			}
		}()
		end := l.confirmedAt().Add(time.Duration(l.sec)*time.Second + time.Second)
		pause := 50 * time.Millisecond
		for {
			left := time.Until(end)
			if left <= 0 {
				return
			}
			// Short attempts: a request proposed while the cluster elects
			// a new leader can be lost, and etcd reports that only after
			// its own request timeout (about 5 s).
			ctx, cancel := context.WithTimeout(d.ctx, min(time.Second, left))
			_, err := d.cli.Revoke(ctx, l.id)
			cancel()
			if err == nil || isLeaseNotFound(err) || !unavailable(err) || !sleepCtx(d.ctx, pause) {
				return
			}
			pause = min(2*pause, time.Second)
		}
	}()
}
