package dlock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dlock-go/dlock/driver"
)

type lockState int

const (
	stateHeld lockState = iota
	stateReleased
	stateLost
)

// Lock is a held lease on a key. It is safe for concurrent use. While auto
// refresh is on (the default) a background watchdog refreshes it every TTL/3.
//
// The client keeps a validity deadline on its monotonic clock: the send time
// of the last successful acquire or refresh, plus the TTL, minus a drift
// allowance (TTL/100 + 2 ms). When the deadline passes without a successful
// refresh the lock is lost: Done closes and Err matches ErrLost. That happens
// before the backend can grant the key to anyone else. Holding a Lock is
// still no proof of exclusivity — a process can pause after checking — so
// resources that must not see stale writes check Fence (see FenceGuard).
type Lock struct {
	h           lockHost
	key         string
	token       string
	fence       uint64
	autoRefresh bool
	acquiredAt  time.Time
	minHold     time.Duration      // WithMinHold; 0 for none
	minTTL      time.Duration      // the backend's, for the lease a min hold leaves
	holdUntil   time.Time          // WithMaxHold's end; zero for none
	keeper      driver.ShareKeeper // a shared grant's driver, when it is one; else nil
	op          string             // Event.Op of the call that took it

	mu             sync.Mutex
	ttl            time.Duration
	state          lockState
	err            error
	deadline       time.Time
	lastSent       time.Time
	expiry         *time.Timer
	releasePending bool
	capped         bool // auto-refresh made its last refresh before holdUntil
	done           chan struct{}
	stop           chan struct{}
}

// lockHost is what a Lock needs of the Client that granted it, and all it
// uses: the driver (Refresh and Release with the lock's own token), the TTL
// bounds, the auto-refresh schedule, the bookkeeping of held locks and of
// local waiters, and the client's log and events.
type lockHost interface {
	// backend is the driver that granted the lock.
	backend() driver.Locker
	// startCall runs the client's CallHooks for a call on the lock.
	startCall(ctx context.Context, call Call) (context.Context, observers)
	// checkTTL refuses a TTL outside the backend's bounds.
	checkTTL(ttl time.Duration) error
	// keepRefreshed puts l on the client's batched refresh and reports
	// true, or reports false: l then runs its own watchdog.
	keepRefreshed(l *Lock) bool
	// stopRefreshing takes l off the batched refresh, if it is on it.
	stopRefreshing(l *Lock)
	// lockEnded is told once, when l stops being held (unlocked, lost,
	// or closed with its client).
	lockEnded(l *Lock)
	// keyFreed wakes the client's next local waiter on key, if any: one
	// of its own locks on key was released or lost.
	keyFreed(key string)
	// report emits e to the event hook and, when msg is not empty, logs
	// msg with attrs at level.
	report(e Event, level slog.Level, msg string, attrs ...any)
	// releaseBehind releases key's grant to token in the background,
	// owner-checked and retried as an unknown outcome's is: a lease the
	// Lock no longer tracks (a max hold's end, a min hold's end), which
	// the backend might otherwise keep alive beside the client's other
	// leases (etcd's shared leases).
	releaseBehind(key, token string, why error)
}

// Key returns the lock's key.
func (l *Lock) Key() string { return l.key }

// Token returns the owner token the lock was taken with.
func (l *Lock) Token() string { return l.token }

// Fence returns the fencing token of this grant: greater than zero and, on
// backends whose Capabilities report Fencing, strictly greater than that of
// every earlier grant of the same key. Refresh does not change it.
func (l *Lock) Fence() uint64 { return l.fence }

// Deadline returns the current validity deadline: the moment the lock is
// considered lost unless refreshed before.
func (l *Lock) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// Done returns a channel closed when the lock is unlocked or lost.
func (l *Lock) Done() <-chan struct{} { return l.done }

// Err returns nil while the lock is held. After a loss it returns an error
// matching ErrLost that wraps the cause; after Unlock (or Client.Close) an
// error matching ErrNotHeld.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checkDeadlineLocked()
	return l.err
}

// checkDeadlineLocked marks the lock lost when its deadline has passed, even
// if the expiry timer has not fired yet (a loaded machine runs timers late).
func (l *Lock) checkDeadlineLocked() {
	if l.state == stateHeld && !time.Now().Before(l.deadline) {
		if l.capped {
			cause := fmt.Errorf("held for its WithMaxHold limit of %v", l.holdUntil.Sub(l.acquiredAt))
			l.loseLocked(CauseMaxHold, cause)
			l.h.releaseBehind(l.key, l.token, cause)
			return
		}
		l.loseLocked(CauseExpired, errors.New("validity deadline passed without a successful refresh"))
	}
}

// Refresh extends the lease to ttl from now (ttl 0 keeps the lock's TTL) and
// moves the validity deadline, measured from this call's send time. It never
// revives a lost lock: after a loss, expiry, Unlock, or when the backend
// says another owner holds the key, the error matches ErrNotHeld. A
// transport error leaves the lock held until its deadline.
func (l *Lock) Refresh(ctx context.Context, ttl time.Duration) error {
	ctx, obs := l.h.startCall(ctx, Call{Op: "refresh", Key: l.key})
	err := l.refreshCall(ctx, ttl)
	obs.end(CallResult{Fence: l.fence, Err: err})
	return err
}

// refreshCall is Refresh's call.
func (l *Lock) refreshCall(ctx context.Context, ttl time.Duration) error {
	if ttl == 0 {
		l.mu.Lock()
		ttl = l.ttl
		l.mu.Unlock()
	}
	if err := l.h.checkTTL(ttl); err != nil {
		return err
	}
	return l.refresh(ctx, ttl)
}

func (l *Lock) refresh(ctx context.Context, ttl time.Duration) error {
	if err := l.beginRefresh(); err != nil {
		return err
	}
	sent := time.Now()
	err := l.renew(ctx, ttl)
	return l.finishRefresh(ctx, sent, ttl, err)
}

// renew refreshes the lock's lease on the backend: with the driver's
// RefreshShared for a shared grant of a ShareKeeper, else with Refresh.
func (l *Lock) renew(ctx context.Context, ttl time.Duration) error {
	if l.keeper != nil {
		return l.keeper.RefreshShared(ctx, l.key, l.token, ttl)
	}
	return l.h.backend().Refresh(ctx, l.key, l.token, ttl)
}

// beginRefresh returns an error matching ErrNotHeld when the lock can no
// longer be refreshed.
func (l *Lock) beginRefresh() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checkDeadlineLocked()
	if l.state != stateHeld {
		return l.notHeldLocked()
	}
	return nil
}

// finishRefresh applies the outcome err of a refresh to ttl sent at sent.
func (l *Lock) finishRefresh(ctx context.Context, sent time.Time, ttl time.Duration, err error) error {
	rtt := time.Since(sent)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != stateHeld {
		return l.notHeldLocked()
	}
	// A deadline that passed while the call was under way is final, even if
	// the backend then extended the lease: Err may already have said lost.
	if l.checkDeadlineLocked(); l.state != stateHeld {
		return l.notHeldLocked()
	}
	if err != nil {
		err = ctxErr(ctx, err)
		if errors.Is(err, ErrNotHeld) {
			l.loseLocked(CauseNotHeld, fmt.Errorf("refresh: backend says the key is no longer ours: %w", err))
			return l.notHeldLocked()
		}
		l.h.report(Event{Kind: EventRefreshFailed, Op: l.op, Key: l.key, Fence: l.fence, Duration: rtt, Err: err},
			slog.LevelWarn, "dlock: refresh failed", "key", l.key, "fence", l.fence, "duration", rtt.Round(time.Microsecond), "err", err, "valid_for", time.Until(l.deadline).Round(time.Millisecond))
		return err
	}
	deadline := driver.ValidUntil(sent, ttl)
	if !time.Now().Before(deadline) {
		// The reply came after the lease it extends could have run out.
		l.loseLocked(CauseLateRefresh, errors.New("refresh reply arrived after the validity deadline"))
		return l.notHeldLocked()
	}
	if sent.After(l.lastSent) {
		l.lastSent, l.deadline, l.ttl = sent, deadline, ttl
		l.expiry.Reset(time.Until(deadline))
	}
	l.h.report(Event{Kind: EventRefreshed, Op: l.op, Key: l.key, Fence: l.fence, Duration: rtt}, 0, "")
	return nil
}

// Unlock releases the lock, if this owner still holds it, and closes Done.
// It returns an error matching ErrNotHeld when the lock was already
// unlocked, was lost or expired, or the backend says another owner holds the
// key; it never releases another owner's lock. When the backend could not be
// reached the error says so and a later Unlock tries again; meanwhile the
// lease runs out on its own.
func (l *Lock) Unlock(ctx context.Context) error {
	ctx, obs := l.h.startCall(ctx, Call{Op: "unlock", Key: l.key})
	err := l.unlock(ctx, errUnlocked)
	obs.end(CallResult{Fence: l.fence, Err: err})
	return err
}

var (
	errUnlocked    = fmt.Errorf("%w: unlocked", ErrNotHeld)
	errMinHoldOver = errors.New("the WithMinHold time after an early Unlock is over")
)

func (l *Lock) unlock(ctx context.Context, why error) error {
	l.mu.Lock()
	l.checkDeadlineLocked()
	var wasLost error
	switch l.state {
	case stateReleased:
		if !l.releasePending {
			err := l.notHeldLocked()
			l.mu.Unlock()
			return err
		}
	case stateLost:
		wasLost = l.err
		l.state, l.releasePending = stateReleased, true
	case stateHeld:
		l.state, l.err, l.releasePending = stateReleased, why, true
		l.finishLocked()
	}
	l.mu.Unlock()
	if l.autoRefresh {
		// Not left for the refresher's next round: a client taking
		// many short locks would pile them up until then. (A lost lock
		// is dropped there; losses are rare.)
		l.h.stopRefreshing(l)
	}

	kept, err := l.release(ctx)
	if err != nil && !errors.Is(err, ErrNotHeld) {
		return fmt.Errorf("dlock: unlock %q: %w", l.key, ctxErr(ctx, err))
	}
	l.mu.Lock()
	l.releasePending = false
	l.mu.Unlock()
	switch {
	case wasLost != nil:
		return fmt.Errorf("%w: %w", ErrNotHeld, wasLost)
	case err != nil:
		return err
	}
	if !kept {
		l.h.keyFreed(l.key)
	}
	held := time.Since(l.acquiredAt)
	l.h.report(Event{Kind: EventReleased, Op: l.op, Key: l.key, Fence: l.fence, Duration: held},
		slog.LevelDebug, "dlock: released", "key", l.key, "fence", l.fence, "held", held)
	return nil
}

// release ends the lock's hold on the backend: it releases the key, or,
// before WithMinHold's time has passed since the grant, sets the lease to
// run out then instead (kept true).
func (l *Lock) release(ctx context.Context) (kept bool, err error) {
	if rest := l.minHold - time.Since(l.acquiredAt); rest > 0 {
		// The lease runs on the server's clock, which may run a little
		// fast against this one (a slewed wall clock): it gets the drift
		// allowance on top, and the release below, on this clock, ends
		// the hold on time.
		if err := l.renew(ctx, max(rest+driver.Drift(rest), l.minTTL)); err != nil {
			return true, err
		}
		// The lease may outlive rest (a TTL in whole seconds, a lease
		// shared with other locks): release it when the hold is over.
		time.AfterFunc(rest, func() { l.h.releaseBehind(l.key, l.token, errMinHoldOver) })
		return true, nil
	}
	if l.keeper != nil {
		return false, l.keeper.ReleaseShared(ctx, l.key, l.token)
	}
	return false, l.h.backend().Release(ctx, l.key, l.token)
}

// autoTTL is the TTL of the next automatic refresh, or false when
// WithMaxHold's time is up and auto-refresh stops: the last one extends
// the lease to the hold's end (or by the backend's MinTTL, when less is
// left), no further.
func (l *Lock) autoTTL() (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holdUntil.IsZero() {
		return l.ttl, true
	}
	rest := time.Until(l.holdUntil)
	if l.capped || rest <= 0 {
		l.capped = true
		return 0, false
	}
	if rest < l.ttl {
		// The last refresh: to the cap, or the backend's shortest lease
		// past it when less is left.
		l.capped = true
		return max(rest, l.minTTL), true
	}
	return l.ttl, true
}

func (l *Lock) notHeldLocked() error {
	if l.err == nil || errors.Is(l.err, ErrNotHeld) {
		if l.err == nil {
			return ErrNotHeld
		}
		return l.err
	}
	return fmt.Errorf("%w: %w", ErrNotHeld, l.err)
}

// start arms the expiry timer and, with auto-refresh, the watchdog.
func (l *Lock) start() {
	l.mu.Lock()
	l.expiry = time.AfterFunc(time.Until(l.deadline), l.expire)
	l.mu.Unlock()
	if l.autoRefresh && !l.h.keepRefreshed(l) {
		go l.watchdog()
	}
}

func (l *Lock) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state != stateHeld {
		return
	}
	if d := time.Until(l.deadline); d > 0 {
		l.expiry.Reset(d) // a refresh moved the deadline meanwhile
		return
	}
	l.checkDeadlineLocked()
}

// loseLocked marks the lock lost for cause, of kind why (Event.Cause). l.mu
// must be held.
func (l *Lock) loseLocked(why string, cause error) {
	if l.state != stateHeld {
		return
	}
	l.state = stateLost
	l.err = fmt.Errorf("%w: %q: %w", ErrLost, l.key, cause)
	held := time.Since(l.acquiredAt)
	l.h.report(Event{Kind: EventLost, Op: l.op, Key: l.key, Fence: l.fence, Duration: held, Cause: why, Err: l.err},
		slog.LevelError, "dlock: lock lost", "key", l.key, "fence", l.fence, "held", held, "err", cause)
	l.finishLocked()
	// A local waiter held back by this lock tries now (the backend tells
	// it how long the lease has left).
	l.h.keyFreed(l.key)
}

func (l *Lock) finishLocked() {
	if l.expiry != nil {
		l.expiry.Stop()
	}
	close(l.stop)
	close(l.done)
	l.h.lockEnded(l)
}

// watchdog refreshes the lock every TTL/3 until it ends. After a failed
// refresh it tries again sooner, as long as the validity deadline allows.
func (l *Lock) watchdog() {
	t := time.NewTimer(l.currentTTL() / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ttl, ok := l.autoTTL()
		if !ok {
			return // the expiry timer ends the lock at its deadline
		}
		ctx, cancel := context.WithDeadline(context.Background(), l.Deadline())
		err := l.refresh(ctx, ttl)
		cancel()
		next := ttl / 3
		if err != nil {
			if errors.Is(err, ErrNotHeld) {
				return
			}
			next = max(ttl/20, 5*time.Millisecond)
		}
		t.Reset(next)
	}
}

func (l *Lock) currentTTL() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ttl
}
