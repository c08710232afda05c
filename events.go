package dlock

import "time"

// EventKind names a moment in a lock's life.
type EventKind int

// The events reported to the hook set by WithEventHook.
const (
	// EventAcquired: a Lock, TryLock or Do call got the lock. Duration is
	// the whole call, waiting included; Attempts counts the attempts.
	EventAcquired EventKind = iota + 1
	// EventWaited: a call that began to wait (EventWaiting) stopped
	// waiting. Duration is the time since it began; Err is set when it
	// gave up (it is then followed by EventFailed), nil when it got the
	// lock (followed by EventAcquired). On a backend that queues
	// (driver.Queuer, driver.SharedQueuer) the whole queued call counts as
	// a wait, granted at once or not.
	EventWaited
	// EventRefreshed: a refresh succeeded. Duration is its round trip.
	EventRefreshed
	// EventRefreshFailed: a refresh failed; the lock is kept while its
	// validity deadline allows. Err says why.
	EventRefreshFailed
	// EventLost: the lock was lost. Duration is how long it was held; Err
	// matches ErrLost.
	EventLost
	// EventReleased: Unlock released the lock. Duration is how long it was
	// held.
	EventReleased
	// EventWaiting: a call found the key held (or queued for it, on a
	// backend that queues) and begins to wait. Every EventWaiting is
	// followed by one EventWaited of the same call.
	EventWaiting
	// EventFailed: a Lock, TryLock, Do, Acquire or RLock call (and their
	// Try forms) returned without the lock. Err says why: it matches
	// ErrNotAcquired when the key was held and the call did not wait (or
	// gave up), the context's error when ctx ended, or another error
	// (the backend's, ErrClosed). Duration is the whole call.
	EventFailed
	// EventRetrying: a waiting call's attempt was refused, or failed and
	// is to be ridden out (Err), and the call waits up to Duration before
	// the next one (less when a release notification comes first).
	// Attempts counts the attempts so far.
	EventRetrying
	// EventNotified: a waiting call was woken by a release: the backend's
	// notification, or a release by its own Client.
	EventNotified
)

// String returns the event's name, e.g. "acquired".
func (k EventKind) String() string {
	switch k {
	case EventAcquired:
		return "acquired"
	case EventWaited:
		return "waited"
	case EventRefreshed:
		return "refreshed"
	case EventRefreshFailed:
		return "refresh_failed"
	case EventLost:
		return "lost"
	case EventReleased:
		return "released"
	case EventWaiting:
		return "waiting"
	case EventFailed:
		return "failed"
	case EventRetrying:
		return "retrying"
	case EventNotified:
		return "notified"
	}
	return "unknown"
}

// Event is passed to the hook set by WithEventHook.
type Event struct {
	Kind EventKind
	// Backend is the client's backend (driver.Capabilities.Backend).
	Backend string
	// Op is the kind of call or lock the event belongs to: "lock" or
	// "try_lock" for an exclusive lock (Client.Lock, Do, RWMutex.Lock,
	// LockMany's keys), "acquire" or "try_acquire" for a semaphore's
	// permit, "rlock" or "try_rlock" for an RWMutex's share. Events of a
	// held lock (refreshed, lost, released) carry the Op of the call that
	// took it.
	Op       string
	Key      string
	Fence    uint64
	Duration time.Duration
	Attempts int
	// Cause says why an EventLost lock was lost: "expired" (its validity
	// ran out without a successful refresh), "not_held" (the backend says
	// the key is no longer the lock's), "late_refresh" (a refresh's reply
	// came after the validity deadline) or "max_hold" (WithMaxHold's
	// limit). Empty for other events.
	Cause string
	Err   error
}

// Causes of EventLost (Event.Cause).
const (
	CauseExpired     = "expired"
	CauseNotHeld     = "not_held"
	CauseLateRefresh = "late_refresh"
	CauseMaxHold     = "max_hold"
)
