package dlock

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// DefaultTTL is the lease length used when no WithTTL option is given.
const DefaultTTL = 30 * time.Second

// Option configures a Client. Options are passed to Open or to a driver
// package's constructor.
type Option func(*clientConfig)

// LockOption configures one Lock, TryLock or Do call. Client-wide defaults
// are set with WithLockDefaults.
type LockOption func(*lockConfig)

// TokenGenerator returns a fresh owner token. It must be safe for concurrent
// use and return a value no other owner can guess or repeat.
type TokenGenerator func() (string, error)

type clientConfig struct {
	logger    *slog.Logger
	hooks     []func(Event)
	callHooks []CallHook
	tokens    TokenGenerator
	defaults  []LockOption
}

type lockConfig struct {
	ttl         time.Duration
	hasTTL      bool
	retry       RetryStrategy
	token       string
	tokenGiven  bool
	autoRefresh bool
	metadata    string
	hasMeta     bool
	minHold     time.Duration
	maxHold     time.Duration
}

// WithLogger sets the logger for lock life-cycle messages: acquisitions and
// releases at Debug, failed refreshes at Warn, lost locks at Error. Every
// line carries the backend (Capabilities.Backend) and, when it is about a
// key, the key; a line about a grant carries its fence, and one about a
// call, a wait or a hold its duration ("duration", "held", "after").
// Tokens and credentials are never logged: not as attributes, and not in
// the errors logged, which the bundled drivers keep free of passwords.
// Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return func(c *clientConfig) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithEventHook adds a function called synchronously for every lock event
// (see EventKind). It is the place to attach metrics (package dlockotel
// adds one). Each call adds a hook; they are called in the order given. A
// hook must be fast and must not call back into the Client. Default: none.
func WithEventHook(fn func(Event)) Option {
	return func(c *clientConfig) {
		if fn != nil {
			c.hooks = append(c.hooks, fn)
		}
	}
}

// WithTokenGenerator replaces the owner-token generator. The default is
// RandomToken: 128 bits from crypto/rand.
func WithTokenGenerator(g TokenGenerator) Option {
	return func(c *clientConfig) {
		if g != nil {
			c.tokens = g
		}
	}
}

// WithLockDefaults sets LockOptions applied to every Lock, TryLock and Do
// call of the client, before the call's own options.
func WithLockDefaults(opts ...LockOption) Option {
	return func(c *clientConfig) { c.defaults = append(c.defaults, opts...) }
}

// WithTTL sets the lease length. The backend frees the key when the lease
// runs out without a refresh. Default: DefaultTTL (30 s), or the backend's
// maximum TTL when that is shorter. A TTL below MinTTL, or one the backend
// cannot honour, is an error matching ErrInvalidTTL.
func WithTTL(d time.Duration) LockOption {
	return func(c *lockConfig) { c.ttl, c.hasTTL = d, true }
}

// WithRetry sets how Lock waits while the key is held by another owner.
// Default: DefaultRetry. TryLock ignores it.
func WithRetry(s RetryStrategy) LockOption {
	return func(c *lockConfig) {
		if s != nil {
			c.retry = s
		}
	}
}

// WithToken sets the owner token instead of generating one. Where the backend
// supports it, acquiring a key already held with the same token succeeds and
// keeps its fence, so a restarted process can take back its own lock.
func WithToken(token string) LockOption {
	return func(c *lockConfig) { c.token = token }
}

// WithAutoRefresh turns the background refresh on or off. Default: on,
// every TTL/3. With it off the lock is lost, and Done closes, when its
// validity deadline passes.
func WithAutoRefresh(on bool) LockOption {
	return func(c *lockConfig) { c.autoRefresh = on }
}

// WithMetadata sets a short description of the owner stored with the lock
// and shown by Inspect and `dlock status`. Default: DefaultMetadata().
func WithMetadata(s string) LockOption {
	return func(c *lockConfig) { c.metadata, c.hasMeta = s, true }
}

// WithMinHold keeps the lock held for at least d after its grant (ShedLock's
// lockAtLeastFor): an Unlock before then does not release the key but sets
// its lease to run out d after the grant, on the backend's clock, and then
// ends the Lock as Unlock does. A scheduled job that finishes in less than
// its period is so not run again in the same period by another host whose
// clock is skewed or whose scheduler fires a little later. d must not exceed
// the backend's MaxTTL. Default 0: Unlock releases at once.
func WithMinHold(d time.Duration) LockOption {
	return func(c *lockConfig) { c.minHold = d }
}

// WithMaxHold caps how long auto-refresh keeps the lock (lockAtMostFor):
// from d after the grant on, it no longer extends the lease, which then
// runs out, and the lock is lost as any lock whose refresh stops is (Done
// closes, Err matches ErrLost and says the hold limit was reached), at d
// or at most the backend's MinTTL later; the client then releases the key. It
// bounds a hung job that would otherwise keep its lock refreshed forever.
// A TTL longer than d is cut to d. Explicit calls of Lock.Refresh are not
// capped. Default 0: no cap.
func WithMaxHold(d time.Duration) LockOption {
	return func(c *lockConfig) { c.maxHold = d }
}

// DefaultMetadata returns "host=HOSTNAME pid=PID" for this process.
func DefaultMetadata() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return fmt.Sprintf("host=%s pid=%d", host, os.Getpid())
}

// RandomToken returns 128 random bits from crypto/rand, base64url-encoded.
func RandomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("dlock: generating token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
