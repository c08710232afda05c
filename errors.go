package dlock

import (
	"errors"

	"github.com/dlock-go/dlock/driver"
)

// Sentinel errors. Every error the package returns that fits one of these
// matches it with errors.Is; context errors stay matchable too
// (errors.Is(err, context.DeadlineExceeded)).
var (
	// ErrNotAcquired is returned by TryLock, and by Lock with a retry
	// strategy that gave up, when another owner holds the key.
	ErrNotAcquired = errors.New("dlock: lock not acquired")

	// ErrNotHeld is returned by Unlock and Refresh of a lock that expired,
	// was released (a second Unlock), or belongs to another owner.
	ErrNotHeld = driver.ErrNotHeld

	// ErrLost is what Lock.Err returns, wrapped with the cause, once the lock
	// was lost: its validity deadline passed without a successful refresh, or
	// the backend said it no longer belongs to this owner.
	ErrLost = errors.New("dlock: lock lost")

	// ErrInvalidKey reports a key that is empty, longer than MaxKeyLen bytes,
	// or not valid UTF-8.
	ErrInvalidKey = errors.New("dlock: invalid key")

	// ErrInvalidTTL reports a TTL that is not positive, below MinTTL, or
	// outside what the backend supports.
	ErrInvalidTTL = driver.ErrInvalidTTL

	// ErrInvalidOption reports an invalid option, URL or URL parameter.
	ErrInvalidOption = driver.ErrInvalidOption

	// ErrClosed reports use of a closed Client.
	ErrClosed = driver.ErrClosed

	// ErrUnavailable reports a backend that could not be reached or did not
	// answer; the error names the backend and its address.
	ErrUnavailable = driver.ErrUnavailable

	// ErrUnsupported reports a call the backend's driver cannot serve, such
	// as List or ForceUnlock on a backend without them. It also matches
	// errors.ErrUnsupported.
	ErrUnsupported = driver.ErrUnsupported

	// ErrLimitMismatch reports a Semaphore whose limit differs from the one
	// the key's current holders use (two sizes on one key, or a Semaphore on
	// an RWMutex's key): a clear error, not an oversubscribed key.
	ErrLimitMismatch = driver.ErrLimitMismatch

	// ErrStaleFence is returned by FenceGuard.Admit for a write whose fence
	// is lower than one the resource has already seen.
	ErrStaleFence = errors.New("dlock: stale fencing token")
)
