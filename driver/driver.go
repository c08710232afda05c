// Package driver defines the contract between the portable dlock package and
// a lock backend. It is for driver authors only: applications use package
// dlock.
//
// A driver makes single attempts and reports what it saw. Everything else —
// retries, waiting, backoff, the auto-refresh watchdog, the client's validity
// deadline, key and TTL validation, token generation, events and logging —
// lives once in the portable layer. The rules below are written as "should";
// the conformance suite in package drivertest checks them.
//
// # Rules for every driver
//
//   - A Locker should be safe for concurrent use by many goroutines.
//   - It should not retry an operation: one call is one attempt. The portable
//     type retries, with the caller's strategy and deadline.
//   - It should honour ctx on every call that can block and return promptly
//     when ctx ends, with an error that wraps ctx.Err().
//   - The TTL should be enforced by the backend (server-side expiry); the
//     driver never compares wall clocks across machines.
//   - Keys arrive validated (non-empty UTF-8, at most 1024 bytes). The driver
//     should encode them so that two different keys never share a lock and no
//     key reaches outside the driver's namespace.
//   - Release and Refresh should compare the owner token and act in one atomic
//     step: nobody releases or extends a lock they do not own. When the token
//     does not own the key they return an error wrapping ErrNotHeld.
//   - An Acquire with a token that already holds the key should succeed,
//     keep the existing fence and set the new TTL, where the backend can; a
//     driver that cannot reports it in Capabilities.
//   - Capabilities should declare MaxTTL: the longest TTL the driver can
//     represent. TTLs arrive within [Capabilities.MinTTL,
//     Capabilities.MaxTTL]; no expiry computation of the driver (server
//     timestamps, rounding to the backend's unit) may overflow for them.
//   - Errors that say the backend could not be reached should name the
//     backend and its address, never credentials.
//
// # Optional capabilities
//
// A driver may also implement [Notifier] (release notifications, so waiters
// wake on release instead of polling), [Queuer] (a native FIFO queue, so a
// release wakes exactly one waiter) and [BatchRefresher] (many refreshes in
// one round trip). Operators' tools use [Lister] (enumerate held keys) and
// [ForceReleaser] (free a key whatever its owner) where a driver has them.
// [SharedLocker] adds shared leases beside exclusive ones, for the lock
// family (semaphores, RW locks).
// Fencing support is declared in [Capabilities].
package driver

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors shared by drivers and the portable package. Package dlock
// re-exports them under the same names; match them with errors.Is.
var (
	// ErrNotHeld reports that the token does not own the key: the lock expired,
	// was released, or belongs to another owner.
	ErrNotHeld = errors.New("dlock: lock not held")
	// ErrInvalidTTL reports a TTL the backend cannot honour.
	ErrInvalidTTL = errors.New("dlock: invalid TTL")
	// ErrInvalidOption reports an option or URL parameter that is not valid.
	ErrInvalidOption = errors.New("dlock: invalid option")
	// ErrClosed reports use of a closed client or driver.
	ErrClosed = errors.New("dlock: client closed")
	// ErrUnavailable reports that the backend could not be reached or failed
	// to answer. Drivers wrap it with the backend name and address.
	ErrUnavailable = errors.New("dlock: backend unavailable")
	// ErrUnsupported reports a call that needs an optional capability the
	// driver does not implement (such as Lister or ForceReleaser). It also
	// matches errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("dlock: not supported by this backend (%w)", errors.ErrUnsupported)
)

// Request is one acquisition attempt.
type Request struct {
	// Key is the lock's name, already validated by the portable layer.
	Key string
	// Token identifies the owner. Release and Refresh must present it.
	Token string
	// TTL is the lease length the backend should enforce.
	TTL time.Duration
	// Metadata is a short free-form description of the owner (host, pid),
	// stored beside the lock where the backend can and shown by Inspect.
	Metadata string
	// Hints tell the driver how the caller will use the outcome. Each
	// serves one backend's optimisation; see Hints.
	Hints Hints
}

// Result is what one acquisition attempt saw.
type Result struct {
	// Acquired reports whether the attempt granted the lock.
	Acquired bool
	// Fence is the fencing token of the grant: strictly increasing per key
	// across grants when Capabilities.Fencing is set, unchanged by Refresh.
	// It should be greater than zero when Acquired.
	Fence uint64
	// HolderTTL is, when not Acquired, the holder's remaining TTL as the
	// backend sees it, or zero when unknown. Waiters use it to bound their
	// sleep.
	HolderTTL time.Duration
	// Queued answers Hints.Wait; see Queued. The zero value means the
	// caller was not queued.
	Queued Queued
	// WriterWaiting reports, on an exclusive attempt of a SharedLocker
	// that was not granted, that the driver recorded the token as a
	// waiting writer (see SharedLocker). The caller then releases the
	// token when it stops waiting without a grant.
	WriterWaiting bool
	// ValidUntil, when not zero, is a deadline on the local monotonic clock
	// (from time.Now) after which the grant must be treated as lost unless
	// refreshed. Drivers whose grant is not tied to the moment the request
	// was sent (Queuer implementations, session-based backends) must set it;
	// others may leave it zero, and the portable layer uses the send time
	// plus the TTL minus the drift allowance. Both are computed with
	// ValidUntil.
	ValidUntil time.Time
}

// Hints are what the portable layer knows about an attempt beyond the lock
// it asks for: how the caller will use the outcome. Each hint exists for one
// backend's optimisation, named on its field; every other driver ignores it,
// and a driver that ignores every hint is correct. They are gathered here so
// that the waiting loop's special cases are visible as such.
type Hints struct {
	// AutoRefresh reports that the portable layer keeps refreshing this
	// lock (RefreshBatch or Refresh, every TTL/3) until it is released or
	// lost. A driver may then tie the lock to a lease it shares with other
	// such locks of the client, provided every lock on a shared lease gets
	// the same outcome from a refresh of that lease. Without AutoRefresh
	// the lock must end on the server when its own TTL runs out.
	//
	// Used by etcddlock (one shared lease per client).
	AutoRefresh bool
	// Wait reports that the caller waits for the key if this attempt is
	// not granted: it then watches the key's releases (Notifier) and tries
	// again when woken. A driver with a server-side queue may put such an
	// attempt in the queue even before the caller's watch is in place
	// (see Queued); it must take the caller out again if no watch follows.
	// Attempts of TryLock leave it false.
	//
	// Used by redisdlock and redlock (the waiter queue beside the key).
	Wait bool
}

// Queued is a driver's answer to Hints.Wait, on an attempt that was not
// granted.
type Queued struct {
	// Wait, when not zero, says the attempt put the caller in a queue on
	// the server, and that the driver's release notification (Notifier)
	// will name this client when its turn comes. A waiter with a watch then
	// waits up to Wait (or HolderTTL, when shorter) for it instead of its
	// backoff, so that queued waiters do not poll. Notifications can still
	// be lost; the driver picks Wait to bound what a lost one costs.
	//
	// A driver sets it only when no release announced after the attempt
	// can be missed: its subscription to the key's releases was confirmed
	// before the attempt was sent, and an announcement that comes before
	// the caller's next WatchReleases of the key reaches that watch at
	// once. The caller then skips the immediate retry it otherwise makes
	// right after subscribing (which covers a release between the attempt
	// and the subscription).
	Wait time.Duration
}

// Info describes a key, as returned by Inspect.
type Info struct {
	// Held reports whether some owner holds the key now.
	Held bool
	// Fence is the holder's fencing token when Held; when not held, the last
	// fence granted if the backend keeps it, else zero.
	Fence uint64
	// TTL is the holder's remaining lease as the backend sees it.
	TTL time.Duration
	// Metadata is what the holder stored with the lock.
	Metadata string
	// Waiters is the number of queued waiters, for backends with native
	// queues; -1 when unknown.
	Waiters int
}

// Capabilities declares optional behaviour. The conformance suite checks
// what is declared and skips what is not.
type Capabilities struct {
	// Backend names the backend in logs and metrics: "memory", "sqlite",
	// "redis", "redlock", "etcd", "zookeeper", "postgres" or "mysql" for
	// the bundled drivers; a short, lower-case, stable word for others.
	// It never carries an address or a credential. Empty: not named.
	Backend string
	// Fencing is set when Result.Fence is strictly increasing per key across
	// successive grants, for as long as the backend keeps its writes.
	Fencing bool
	// ReacquireWithToken is set when an Acquire with the token that already
	// holds the key succeeds and keeps its fence.
	ReacquireWithToken bool
	// FIFO is set when the driver implements Queuer and grants in arrival
	// order.
	FIFO bool
	// MinTTL and MaxTTL bound the TTLs the backend honours. A zero MinTTL
	// means the portable layer's minimum (dlock.MinTTL). MaxTTL is
	// required: the longest TTL whose expiry the driver and its backend
	// can represent and compute (server-side timestamps, arithmetic in the
	// driver, the column types of a table) without overflow, at most
	// [MaxTTL]. The portable layer rejects any TTL outside [MinTTL,
	// MaxTTL] with an error wrapping ErrInvalidTTL before it reaches the
	// driver, for Acquire, Refresh and RefreshBatch alike, so these fields
	// are the one place a driver states its bounds: it does not check them
	// again. A driver that declares no MaxTTL (zero) gets [MaxTTL]. Drivers round a TTL up to their
	// granularity only where the server-side lease is then at least as
	// long as requested.
	MinTTL, MaxTTL time.Duration
}

// MaxTTL is the longest TTL the portable layer ever passes to a driver
// (9e9 s, about 285 years; etcd's largest lease). The longest
// time.Duration is about 292 years: this bound leaves room for a deadline
// on the monotonic clock (which counts from process start) plus the TTL,
// and for rounding a TTL up to whole milliseconds or seconds, without
// overflow. It is a whole number of seconds.
const MaxTTL = 9_000_000_000 * time.Second

// Locker is the contract every backend implements.
type Locker interface {
	// Acquire makes exactly one attempt to take req.Key for req.Token.
	// It should not wait for a holder to go away. When the key is held by
	// another owner it returns a Result with Acquired false and a nil error.
	Acquire(ctx context.Context, req Request) (Result, error)

	// Refresh extends the lease of key to ttl from now, if token owns it.
	// It returns an error wrapping ErrNotHeld when it does not. It should
	// leave the fence unchanged.
	Refresh(ctx context.Context, key, token string, ttl time.Duration) error

	// Release frees key if token owns it, and returns an error wrapping
	// ErrNotHeld when it does not. It never frees a lock of another owner.
	// The portable layer also calls it, in the background, with the token
	// of an Acquire that returned an error (its outcome is unknown): it
	// should then free a grant of that token that reached the server,
	// even though this driver never reported it — or the driver cleans up
	// such grants itself.
	// A driver that implements Notifier should notify waiters here.
	Release(ctx context.Context, key, token string) error

	// Inspect reports the state of key without changing it.
	Inspect(ctx context.Context, key string) (Info, error)

	// Capabilities reports the driver's optional behaviour.
	Capabilities() Capabilities

	// Close releases the driver's resources. Locks still held are left to
	// expire on the backend. It should be safe to call more than once.
	Close() error
}

// Notifier is implemented by drivers that can tell waiters when a key may
// have been released.
type Notifier interface {
	// WatchReleases returns a channel that receives a value (with a
	// non-blocking send into a buffer of one) whenever key may have been
	// released, and a function that stops the watch. Notifications may be
	// spurious or lost; waiters always re-try and keep a bounded fallback
	// poll. The driver should share one subscription (connection) among all
	// watches of the client, not open one per waiter. ctx bounds this call
	// only; the watch lasts until the stop function is called.
	WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error)
}

// RefreshRequest is one lock of a RefreshBatch call.
type RefreshRequest struct {
	Key, Token string
	TTL        time.Duration
}

// BatchRefresher is implemented by drivers that can refresh many locks in
// one round trip (a pipeline, one statement). A client holding many locks
// with auto-refresh then refreshes them in batches instead of one round trip
// per lock.
type BatchRefresher interface {
	// RefreshBatch refreshes each lock as Refresh would and returns one
	// error per request, in order: nil, an error wrapping ErrNotHeld, or
	// another error. It should make one round trip (or one per server) for
	// the whole batch.
	RefreshBatch(ctx context.Context, reqs []RefreshRequest) []error
}

// Queuer is implemented by drivers with a native FIFO queue (etcd revisions,
// ZooKeeper sequential nodes).
type Queuer interface {
	// AcquireQueued joins the key's queue and blocks until the lock is
	// granted or ctx ends. Each waiter should wait on its predecessor only,
	// so that a release wakes one waiter. When ctx ends it must return
	// promptly (within a few tens of milliseconds, not after a backend
	// round trip that may be slow) with an error wrapping ctx.Err(), and
	// make sure its queue entry goes: removed before returning, or in the
	// background at once, retried until it is gone (or the backend removes
	// it with the session or lease), so that the key is free for others as
	// soon as that removal lands and never waits for a TTL or session
	// expiry. The driver's own later calls on the key must not find the
	// entry (they wait for its removal), and Close must wait, bounded, for
	// removals still under way. Whenever it returns an error it must leave
	// no entry or grant behind in that sense, even one whose write had an
	// unknown outcome: the portable layer releases the token of a failed
	// Acquire in the background, not of a failed AcquireQueued. A granted
	// Result must set ValidUntil.
	AcquireQueued(ctx context.Context, req Request) (Result, error)
}

// KeyInfo is one held key, as returned by List.
type KeyInfo struct {
	// Key is the lock's name, as the portable layer gave it.
	Key string
	Info
}

// Lister is implemented by drivers that can enumerate the keys held on the
// backend. It is for operators' tools (`dlock list`), not for lock paths.
type Lister interface {
	// List returns the keys held now whose names start with prefix (all
	// held keys when prefix is empty), in bytewise key order, each with
	// what Inspect would report for it (Held true). Every byte of prefix is
	// literal: a driver that matches with patterns (SQL LIKE, Redis MATCH)
	// escapes them. It should read the backend in bounded batches, return
	// only lock keys of its own namespace (never its fence counters, queue
	// entries or other bookkeeping, nor an application's other keys), and
	// may leave out a key whose lease ran out but was not yet removed.
	List(ctx context.Context, prefix string) ([]KeyInfo, error)
}

// ForceReleaser is implemented by drivers that can free a key whoever holds
// it. It is for operators (`dlock unlock --any-owner`), never used on the
// portable layer's lock paths.
type ForceReleaser interface {
	// ForceRelease frees key, whoever holds it, in one atomic step with
	// reading what it frees, and returns what it freed: the holder's Info
	// (Held true), or Held false and a nil error when nobody held the key.
	// It should wake waiters as Release does and keep the key's fence
	// counter, so the next grant's fence is higher than the freed one's.
	// The freed holder finds out at its next refresh (ErrNotHeld).
	ForceRelease(ctx context.Context, key string) (Info, error)
}

// URLOpener opens a driver from a URL. Drivers register one per scheme with
// dlock.Register. An opener should consume every query parameter it knows and
// return an error wrapping ErrInvalidOption naming any that is left.
type URLOpener interface {
	OpenLockerURL(ctx context.Context, u *URL) (Locker, error)
}

// URLOpenerFunc adapts a function to URLOpener.
type URLOpenerFunc func(ctx context.Context, u *URL) (Locker, error)

// OpenLockerURL calls f(ctx, u).
func (f URLOpenerFunc) OpenLockerURL(ctx context.Context, u *URL) (Locker, error) {
	return f(ctx, u)
}
