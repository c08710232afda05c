// Package dlockgocron runs gocron (github.com/go-co-op/gocron/v2) jobs once
// across the instances of a service, on any dlock backend: NewLocker is a
// gocron.Locker (a lock per job run, for gocron.WithDistributedLocker or the
// per-job gocron.WithDistributedJobLocker) and NewElector a gocron.Elector
// (one leader whose scheduler runs every job, for
// gocron.WithDistributedElector).
//
// It is its own Go module, so that gocron is a dependency of the programs
// that use it and not of dlock itself.
package dlockgocron

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/go-co-op/gocron/v2"
)

// Option configures NewLocker.
type Option func(*Locker)

// WithKeyPrefix puts prefix before every job name to make the lock key:
// the key of job "report" is prefix+"report". Default: no prefix, the key
// is the job's name.
func WithKeyPrefix(prefix string) Option {
	return func(l *Locker) { l.prefix = prefix }
}

// WithLockOptions sets the options of each run's TryLock, after the
// Client's own defaults: dlock.WithMinHold (the least time a run keeps its
// job's key; see NewLocker), dlock.WithMaxHold (the most), dlock.WithTTL,
// dlock.WithMetadata. Several calls add up, later ones winning.
func WithLockOptions(opts ...dlock.LockOption) Option {
	return func(l *Locker) { l.opts = append(l.opts, opts...) }
}

// Locker is a gocron.Locker over a dlock Client. Make one with NewLocker.
type Locker struct {
	c      *dlock.Client
	prefix string
	opts   []dlock.LockOption
}

var _ gocron.Locker = (*Locker)(nil)

// NewLocker returns a gocron.Locker that takes a job's key with
// Client.TryLock at each run: the instance that gets it runs the job, and
// every other instance's Lock fails with an error matching
// dlock.ErrNotAcquired, so that gocron skips the run there (and calls the
// job's gocron.AfterLockError listener). The key is the job's name (set
// it with gocron.WithName; gocron's default is the function's name), after
// the WithKeyPrefix prefix. The lock is refreshed while the job runs and
// released when it returns.
//
// There is no default min hold, and without one a job can run twice in a
// period: gocron fires a job on every instance at about the same instant,
// and a job that ends in milliseconds releases its key before a later
// instance (clock skew, a GC pause, a loaded host) tries it. Set
// dlock.WithMinHold with WithLockOptions to a little less than the job's
// period, so that the key stays held until the period's other attempts
// are over: a Locker has only the job's name, not its schedule, so only
// you can choose it. For jobs of different periods, give each its own
// Locker with gocron.WithDistributedJobLocker.
//
// A run that outlives the lock (dlock.WithMaxHold's cap, a lost backend)
// is not stopped by gocron: the lock's loss only frees the key for the
// next run.
func NewLocker(client *dlock.Client, opts ...Option) *Locker {
	l := &Locker{c: client}
	for _, o := range opts {
		o(l)
	}
	l.opts = slices.Clip(l.opts)
	return l
}

// Lock implements gocron.Locker: it takes prefix+key with TryLock. An
// error matching dlock.ErrNotAcquired means another instance has the run.
func (l *Locker) Lock(ctx context.Context, key string) (gocron.Lock, error) {
	lk, err := l.c.TryLock(ctx, l.prefix+key, l.opts...)
	if err != nil {
		return nil, fmt.Errorf("dlockgocron: job %q: %w", key, err)
	}
	return runLock{l: lk}, nil
}

// runLock is a job run's lock.
type runLock struct {
	l *dlock.Lock
}

// Unlock implements gocron.Lock: it unlocks the run's lock (with a min
// hold, the key stays held until the hold is over). gocron calls it with
// the job's context, which ends when the scheduler shuts down; the unlock
// is not cancelled by that, and is bounded by the lock's remaining lease
// (at least 1 s, at most 10 s) instead, so that a shutdown does not leave
// the key held for its whole TTL.
func (l runLock) Unlock(ctx context.Context) error {
	d := min(max(time.Until(l.l.Deadline()), time.Second), 10*time.Second)
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	return l.l.Unlock(uctx)
}
