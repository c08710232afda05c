package dlock

import "time"

// EventKind names a moment in a lock's life.
type EventKind int

// The events reported to the hook set by WithEventHook.
const (
	// EventAcquired: a Lock, TryLock or Do call got the lock. Duration is
	// the whole call, waiting included; Attempts counts the attempts.
	EventAcquired EventKind = iota + 1
	// EventWaited: a call found the key held and waited. Duration is the
	// time spent waiting; Err is set when it gave up.
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
	}
	return "unknown"
}

// Event is passed to the hook set by WithEventHook.
type Event struct {
	Kind     EventKind
	Key      string
	Fence    uint64
	Duration time.Duration
	Attempts int
	Err      error
}
