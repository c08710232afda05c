package driver

import "time"

// Drift is the clock drift allowance subtracted from a lease's validity, as
// in the Redlock paper: 1% of the TTL plus 2 ms. The portable layer and
// every driver that sets Result.ValidUntil use it, so that a grant is
// treated as lost at the same moment whoever computes its deadline.
func Drift(ttl time.Duration) time.Duration {
	return ttl/100 + 2*time.Millisecond
}

// ValidUntil is the validity deadline of a lease of ttl whose request was
// sent at sent (on the local monotonic clock): sent + ttl − Drift(ttl).
// Drivers that must set Result.ValidUntil (Queuer implementations,
// session-based backends, quorums) measure it with this from the moment
// that bounds the server-side lease from below. ttl is at most MaxTTL, so
// the sum cannot overflow.
func ValidUntil(sent time.Time, ttl time.Duration) time.Time {
	return sent.Add(ttl - Drift(ttl))
}
