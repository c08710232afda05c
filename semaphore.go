package dlock

import (
	"context"
	"fmt"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// MaxLimit is the largest limit a Semaphore takes.
const MaxLimit = driver.MaxLimit

// Semaphore hands out up to Limit permits on one key at once: "at most 5
// workers call the payment API". Each permit is a *Lock of its own, with
// its own fence from the key's one counter (strictly increasing across all
// permits and exclusive grants of the key), TTL, auto-refresh, Done and
// Err, exactly as a mutex lock; Unlock gives the permit back. A holder that
// crashes frees its permit when its TTL runs out.
//
// The limit is stored with the key's permits: a Semaphore of another size
// on the same key (in this process or another) gets an error matching
// ErrLimitMismatch while permits are out, never an oversubscribed key. An
// exclusive lock of the key (Client.Lock, RWMutex.Lock) waits for every
// permit to be given back and, while it waits, stops new permits from being
// handed out.
//
// It needs a backend whose driver grants shared leases
// (driver.SharedLocker); elsewhere its calls fail with an error matching
// ErrUnsupported. A Semaphore is safe for concurrent use; it is a handle
// that holds nothing itself.
type Semaphore struct {
	c     *Client
	key   string
	limit int
}

// Semaphore returns the semaphore of key with limit permits. A limit
// outside [1, MaxLimit] makes every call fail with an error matching
// ErrInvalidOption; an invalid key, with ErrInvalidKey.
func (c *Client) Semaphore(key string, limit int) *Semaphore {
	return &Semaphore{c: c, key: key, limit: limit}
}

// Key returns the semaphore's key.
func (s *Semaphore) Key() string { return s.key }

// Limit returns how many permits the semaphore hands out at once.
func (s *Semaphore) Limit() int { return s.limit }

func (s *Semaphore) check() error {
	if s.limit < 1 || s.limit > MaxLimit {
		return fmt.Errorf("%w: semaphore limit %d is outside [1, %d]", ErrInvalidOption, s.limit, MaxLimit)
	}
	return nil
}

// Acquire takes a permit, waiting while all are out, as Client.Lock waits
// for a key: woken by a release notification, its backoff, or the first
// permit's lease running out, until a permit is granted, the retry strategy
// gives up (ErrNotAcquired) or ctx ends. opts are those of Client.Lock.
func (s *Semaphore) Acquire(ctx context.Context, opts ...LockOption) (*Lock, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.c.acquireAs(ctx, s.key, opts, false, &share{limit: s.limit})
}

// TryAcquire makes one attempt at a permit: ErrNotAcquired when all are out
// (or an exclusive lock of the key is held or waited for).
func (s *Semaphore) TryAcquire(ctx context.Context, opts ...LockOption) (*Lock, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.c.acquireAs(ctx, s.key, opts, true, &share{limit: s.limit})
}

// Holders returns how many permits are out now.
func (s *Semaphore) Holders(ctx context.Context) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	h, err := s.c.Holders(ctx, s.key)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, g := range h.Holders {
		if g.Shared {
			n++
		}
	}
	return n, nil
}

// Holders describes the grants of a key, as Client.Holders returns them.
type Holders struct {
	// Key is the key inspected.
	Key string
	// Holders are the live grants in fence order: one exclusive holder, or
	// the shared ones (a Semaphore's permits, an RWMutex's readers).
	Holders []Holder
	// Limit is the limit stored with the shared grants: the Semaphore's
	// size, or 0 (none out, or an RWMutex's readers, which have no limit).
	Limit int
	// WritersWaiting counts exclusive lockers waiting for the shared grants
	// to end; new shared grants wait for them (writer preference).
	WritersWaiting int
}

// Holder is one grant of a key.
type Holder struct {
	// Shared reports a shared grant (a permit or a reader); false is the
	// exclusive holder.
	Shared bool
	// Fence is the grant's fencing token.
	Fence uint64
	// TTL is the grant's remaining lease as the backend sees it.
	TTL time.Duration
	// Metadata is what the holder stored with its grant (WithMetadata).
	Metadata string
}

// Holders reports every grant of key now, shared or exclusive, with the
// limit stored with the shared ones, without changing them. It needs a
// backend whose driver grants shared leases; elsewhere it fails with an
// error matching ErrUnsupported (use Inspect).
func (c *Client) Holders(ctx context.Context, key string) (Holders, error) {
	if err := ValidateKey(key); err != nil {
		return Holders{}, err
	}
	if c.isClosed() {
		return Holders{}, ErrClosed
	}
	if c.sharer == nil {
		return Holders{}, fmt.Errorf("%w: shared leases (semaphores, RW locks)", ErrUnsupported)
	}
	h, err := c.sharer.Holders(ctx, key)
	if err != nil {
		return Holders{}, ctxErr(ctx, err)
	}
	out := Holders{Key: key, Limit: h.Limit, WritersWaiting: h.WritersWaiting, Holders: make([]Holder, len(h.Holders))}
	for i, g := range h.Holders {
		out.Holders[i] = Holder(g)
	}
	return out, nil
}
