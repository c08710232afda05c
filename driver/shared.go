package driver

import (
	"context"
	"errors"
	"time"
)

// ErrLimitMismatch reports a shared attempt whose limit differs from the
// one the key's current shared grants were taken with: two Semaphores of
// different sizes on one key, or a Semaphore on a key that an RWMutex's
// readers use. Package dlock re-exports it.
var ErrLimitMismatch = errors.New("dlock: limit differs from the one the key's holders use")

// MaxLimit is the largest shared limit the portable layer passes to a
// driver.
const MaxLimit = 1 << 20

// SharedRequest is one attempt at a shared grant of a key: one permit of a
// semaphore, or one reader's share of an RW lock.
type SharedRequest struct {
	Request
	// Limit is how many shared grants the key may have at once, in
	// [1, MaxLimit]; 0 means no limit (an RW lock's readers). The driver
	// stores it with the key's shared grants: an attempt with another
	// limit while grants of the key exist fails with an error wrapping
	// ErrLimitMismatch. The stored limit goes with the key's last grant.
	Limit int
}

// Holder is one live grant of a key, as Holders reports it.
type Holder struct {
	// Shared reports a shared grant; false is the exclusive holder.
	Shared bool
	// Fence is the grant's fencing token, from the key's one counter.
	Fence uint64
	// TTL is the grant's remaining lease as the backend sees it.
	TTL time.Duration
	// Metadata is what the holder stored with its grant.
	Metadata string
}

// Holders is what a key's grants look like now.
type Holders struct {
	// Holders are the live grants, in fence order: one exclusive holder,
	// or any number of shared ones.
	Holders []Holder
	// Limit is the limit stored with the shared grants (0 when there are
	// none, or they have no limit).
	Limit int
	// WritersWaiting is how many exclusive attempts are recorded as
	// waiting for the shared grants to end (see SharedLocker).
	WritersWaiting int
}

// SharedLocker is implemented by drivers that grant shared leases beside
// exclusive ones: the lock family's semaphores and RW locks. A key then has
// one exclusive holder (Acquire), or up to a limit of shared holders
// (AcquireShared), never both. Every grant, shared or exclusive, is a lease
// of its own: its own token, TTL and fence from the key's one counter
// (strictly increasing across all grants of the key), refreshed by
// Refresh and RefreshBatch and ended by Release with its token, exactly as
// an exclusive lock is.
//
// A SharedLocker's other methods change as follows:
//
//   - Acquire is refused (Acquired false, nil error) while the key has a
//     live shared grant, with HolderTTL the shortest remaining lease among
//     them. When such a refused attempt has Hints.Wait set, the driver
//     records its token as a waiting writer for req.TTL from now (an
//     earlier record of the token is replaced) and sets
//     Result.WriterWaiting; while the key has a live record of a token, no
//     new shared grant is made (writer preference: readers that keep
//     overlapping never starve a writer). The record goes when its token
//     is granted, when Release is called with its token (which still
//     returns ErrNotHeld when the token holds nothing), or when its TTL
//     runs out: a writer that crashes while it waits holds new readers
//     back for at most its TTL.
//   - A driver that is also a Queuer records waiting writers with its
//     queue instead: while the entry of an exclusive AcquireQueued waits,
//     no new shared grant is made, and Holders counts it in
//     WritersWaiting; the entry goes when the wait ends (a crashed
//     waiter's with its session or lease). The portable layer then never
//     sends it an Acquire with Hints.Wait, and its Acquire need not record
//     writers or set WriterWaiting. Shared attempts (AcquireShared) are
//     still single attempts: the portable layer waits for them.
//   - Release of a shared grant notifies waiters (Notifier) as that of an
//     exclusive one does.
//   - Inspect of a key with shared grants reports Held, the newest grant's
//     Fence and Metadata, and the longest remaining TTL among them.
//   - List reports keys with shared grants as Inspect does; ForceRelease
//     frees every grant of the key and removes its waiting writers'
//     records (a Queuer's waiting entries stay: they are live waits, and
//     the first of them takes the key).
//
// The mutex's key layout does not change: a key never given a shared
// grant is stored as it was, so interoperation with other lock libraries
// on mutex keys is kept.
type SharedLocker interface {
	Locker
	// AcquireShared makes exactly one attempt at one of req.Key's shared
	// grants for req.Token. It is granted while the key has no exclusive
	// holder, no live waiting writer and fewer than req.Limit shared grants
	// (any number when req.Limit is 0). When not granted it returns
	// Acquired false and a nil error, with HolderTTL the shortest
	// remaining lease of what stands in the way, or an error wrapping
	// ErrLimitMismatch. An attempt with a token that already has a shared
	// grant of the key renews it, keeping its fence.
	AcquireShared(ctx context.Context, req SharedRequest) (Result, error)
	// Holders reports the key's live grants without changing them.
	Holders(ctx context.Context, key string) (Holders, error)
}

// ShareKeeper is implemented by SharedLockers whose refresh and release of
// a shared grant cost less when the driver is told that the token holds
// one: a Refresh or Release there first looks for an exclusive lease of
// the token (the SQL drivers: one statement more). The portable layer calls
// these, instead of Refresh and Release, for the grants of AcquireShared
// only; a release in the background of an attempt whose outcome is unknown
// still calls Release.
type ShareKeeper interface {
	SharedLocker
	// RefreshShared is Refresh for a token that holds a shared grant of
	// key: it extends the live grant to ttl from now, keeping its fence.
	// It returns an error wrapping ErrNotHeld, changing nothing, when the
	// token holds no live shared grant of key, whatever else it holds.
	RefreshShared(ctx context.Context, key, token string, ttl time.Duration) error
	// ReleaseShared is Release for a token that holds a shared grant of
	// key: it ends the grant and notifies waiters as Release does. It
	// returns an error wrapping ErrNotHeld when the token holds no live
	// shared grant of key, and then leaves an exclusive lease of the
	// token held.
	ReleaseShared(ctx context.Context, key, token string) error
}

// SharedQueuer is implemented by SharedLockers that queue shared waits in
// the backend: with their native FIFO queue (Queuer) where they have one,
// else in a queue of shared entries of their own. A waiting permit or
// reader keeps its place in the key's queue, so a release wakes the
// waiters it makes room for instead of every waiting client, and permits
// are granted in arrival order. The portable layer sends it every shared
// attempt that may wait (Hints.Wait), instead of waiting for
// AcquireShared's refusals itself. A driver that is not a Queuer records
// waiting writers as SharedLocker says; their records have no place in
// the queue and count as coming before every shared entry.
type SharedQueuer interface {
	SharedLocker
	// AcquireSharedQueued joins req.Key's queue with a shared entry and
	// blocks until it is granted, or ctx ends. It is granted, as
	// AcquireShared's attempt is, once no exclusive entry (a holder, or a
	// writer waiting: writer preference) and fewer than req.Limit shared
	// entries (any number when req.Limit is 0) come before it; an entry of
	// another limit before it fails it with an error wrapping
	// ErrLimitMismatch. Every other rule is AcquireQueued's: the end of
	// ctx returns promptly with an error wrapping ctx.Err() and leaves no
	// entry or grant behind, the driver's later calls wait for the entry's
	// removal, and a granted Result sets ValidUntil.
	AcquireSharedQueued(ctx context.Context, req SharedRequest) (Result, error)
}
