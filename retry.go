package dlock

import (
	"math/rand/v2"
	"time"
)

// RetryStrategy decides how long Lock waits between attempts while another
// owner holds the key. Waiters also wake early on a release notification
// from the backend and never sleep past the holder's remaining TTL, so the
// backoff is the fallback, not the hand-off path.
//
// A strategy is shared by concurrent Lock calls and must be safe for
// concurrent use; it keeps no per-call state (the attempt number is passed).
type RetryStrategy interface {
	// NextBackoff returns the wait before attempt number attempt+1, given
	// that attempt attempts (counted from 1) have failed. A negative value
	// means give up: Lock then returns an error matching ErrNotAcquired.
	NextBackoff(attempt int) time.Duration
}

// RetryFunc adapts a function to RetryStrategy.
type RetryFunc func(attempt int) time.Duration

// NextBackoff calls f(attempt).
func (f RetryFunc) NextBackoff(attempt int) time.Duration { return f(attempt) }

// NoRetry makes Lock give up after one attempt, like TryLock.
func NoRetry() RetryStrategy { return RetryFunc(func(int) time.Duration { return -1 }) }

// LinearBackoff waits d between attempts, forever (until the context ends).
func LinearBackoff(d time.Duration) RetryStrategy {
	if d <= 0 {
		d = time.Millisecond
	}
	return RetryFunc(func(int) time.Duration { return d })
}

// ExponentialBackoff waits min after the first failed attempt, doubling up
// to max, each wait jittered to a random value in [w/2, w] so that waiters
// started together spread out. It retries until the context ends.
func ExponentialBackoff(min, max time.Duration) RetryStrategy {
	if min <= 0 {
		min = time.Millisecond
	}
	if max < min {
		max = min
	}
	return RetryFunc(func(attempt int) time.Duration {
		w := max
		if attempt < 1 {
			attempt = 1
		}
		if shift := attempt - 1; shift < 62 {
			if d := min << shift; d > 0 && d < max {
				w = d
			}
		}
		return w/2 + rand.N(w/2+1)
	})
}

// LimitRetry stops s after n failed attempts: Lock then returns an error
// matching ErrNotAcquired.
func LimitRetry(s RetryStrategy, n int) RetryStrategy {
	return RetryFunc(func(attempt int) time.Duration {
		if attempt >= n {
			return -1
		}
		return s.NextBackoff(attempt)
	})
}

// DefaultRetry is the strategy Lock uses when none is given: jittered
// exponential backoff from 8 ms to 500 ms, on top of release notifications.
var DefaultRetry = ExponentialBackoff(8*time.Millisecond, 500*time.Millisecond)
