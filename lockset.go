package dlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// MaxLockManyKeys is the most keys one LockMany call takes.
const MaxLockManyKeys = 1024

// LockSet is the locks of one LockMany call, one per key, taken all or
// nothing. Each member is a *Lock of its own, with its key's fence, its
// TTL, auto-refresh, Done and Err.
type LockSet struct {
	locks []*Lock // in the caller's order of keys
	done  chan struct{}
	once  sync.Once
	lost  error
	mu    sync.Mutex
}

// LockMany takes every key of keys, all or nothing: "move money between two
// accounts: lock both, without deadlock". opts apply to each lock as they
// do to Client.Lock (the retry strategy to each wait).
//
// It is deadlock-free and never holds some keys while it waits for
// another. It tries every key at once: in one atomic step where the backend
// has one (driver.MultiLocker: a Redis script over keys of one Cluster
// slot, an SQL transaction, an etcd Txn), otherwise with TryLock in one
// canonical order (bytewise). When a key is held elsewhere it gives back
// what it took, waits for that key alone (holding it when the wait ends, so
// the wait is the key's usual FIFO or notified one), and tries the others
// again. Two callers locking {a, b} and {b, a} both make progress. When ctx
// ends, or the retry strategy gives up, nothing is left held.
//
// keys must be 1 to MaxLockManyKeys valid keys without duplicates, or the
// error matches ErrInvalidKey.
func (c *Client) LockMany(ctx context.Context, keys []string, opts ...LockOption) (*LockSet, error) {
	order, err := lockManyOrder(keys)
	if err != nil {
		return nil, err
	}
	if c.isClosed() {
		return nil, ErrClosed
	}
	held := make(map[string]*Lock, len(keys))
	giveBack := func() {
		releaseAll(held)
		clear(held)
	}
	wait := "" // the key to wait for first, holding nothing else
	for {
		if wait != "" {
			l, err := c.Lock(ctx, wait, opts...)
			if err != nil {
				return nil, err
			}
			held[wait] = l
		}
		busy, err := c.tryKeys(ctx, order, held, opts)
		if err != nil {
			giveBack()
			return nil, err
		}
		if busy == "" {
			break
		}
		giveBack()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		wait = busy
	}
	s := &LockSet{done: make(chan struct{})}
	for _, key := range keys {
		s.locks = append(s.locks, held[key])
	}
	for _, l := range s.locks {
		go func() {
			select {
			case <-l.Done():
				s.end(l)
			case <-s.done:
			}
		}()
	}
	return s, nil
}

// tryKeys takes the keys of order that held lacks, adding them to held: in
// one atomic step where the driver has one (driver.MultiLocker), else with
// one TryLock each, in order. It returns the first key held elsewhere, or ""
// when every key was taken.
func (c *Client) tryKeys(ctx context.Context, order []string, held map[string]*Lock, opts []LockOption) (busy string, err error) {
	var rest []string
	for _, key := range order {
		if held[key] == nil {
			rest = append(rest, key)
		}
	}
	if c.multi != nil && len(rest) > 1 {
		busy, err := c.tryMany(ctx, rest, held, opts)
		if !errors.Is(err, errors.ErrUnsupported) {
			return busy, err
		}
		c.log.Debug("dlock: LockMany takes these keys one at a time", "key", rest[0], "keys", len(rest), "reason", err)
	}
	for _, key := range rest {
		l, err := c.TryLock(ctx, key, opts...)
		if errors.Is(err, ErrNotAcquired) {
			return key, nil
		}
		if err != nil {
			return "", err
		}
		held[key] = l
	}
	return "", nil
}

// tryMany is tryKeys' atomic step: one driver.MultiLocker attempt at every
// key of keys. An error wrapping errors.ErrUnsupported means the driver
// cannot take these keys at once, and nothing was tried.
func (c *Client) tryMany(ctx context.Context, keys []string, held map[string]*Lock, opts []LockOption) (busy string, err error) {
	ws := make([]*waiter, len(keys))
	reqs := make([]driver.Request, len(keys))
	for i, key := range keys {
		cfg, err := c.lockConfig(opts)
		if err != nil {
			return "", err
		}
		w := &waiter{c: c, ctx: ctx, cfg: cfg, try: true, start: time.Now(), attempts: 1}
		w.req = w.attemptRequest(key)
		w.req.Hints = driver.Hints{}
		if err := c.awaitCleaning(ctx, key, w.req.Token); err != nil {
			return "", err
		}
		ws[i], reqs[i] = w, w.req
	}
	sent := time.Now()
	res, err := c.multi.AcquireMany(ctx, reqs)
	if errors.Is(err, errors.ErrUnsupported) {
		return "", err
	}
	if err == nil && len(res) != len(reqs) {
		err = fmt.Errorf("dlock: driver broke the MultiLocker contract (%d results for %d keys)", len(res), len(reqs))
	}
	if err != nil {
		for _, r := range reqs {
			c.cleanUnknown(r.Key, r.Token, err)
		}
		return "", ctxErr(ctx, err)
	}
	granted := 0
	for _, r := range res {
		if r.Acquired {
			granted++
		}
	}
	if granted == 0 {
		// Wait for the first key that stood in the way (the driver may
		// not say which: then the first).
		for i, r := range res {
			if r.HolderTTL > 0 {
				return keys[i], nil
			}
		}
		return keys[0], nil
	}
	var mixed error
	if granted < len(res) {
		mixed = fmt.Errorf("dlock: driver broke the MultiLocker contract (%d of %d keys granted)", granted, len(res))
	}
	for i, r := range res {
		if !r.Acquired {
			continue
		}
		if mixed != nil {
			_ = c.releaseNow(reqs[i].Key, reqs[i].Token, reqs[i].TTL)
			continue
		}
		if l := ws[i].grant(r, sent); l != nil {
			held[keys[i]] = l
		} else if busy == "" {
			// The reply came after the validity deadline, or the client
			// closed: grant released the key. Wait for it, then try again.
			busy = keys[i]
		}
	}
	if mixed != nil {
		return "", mixed
	}
	if c.isClosed() {
		return "", ErrClosed
	}
	return busy, nil
}

// lockManyOrder checks keys and returns them in canonical order.
func lockManyOrder(keys []string) ([]string, error) {
	if len(keys) == 0 || len(keys) > MaxLockManyKeys {
		return nil, fmt.Errorf("%w: LockMany takes 1 to %d keys, not %d", ErrInvalidKey, MaxLockManyKeys, len(keys))
	}
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			return nil, err
		}
	}
	order := slices.Clone(keys)
	slices.SortFunc(order, strings.Compare)
	for i := 1; i < len(order); i++ {
		if order[i] == order[i-1] {
			return nil, fmt.Errorf("%w: LockMany was given %q twice", ErrInvalidKey, order[i])
		}
	}
	return order, nil
}

// releaseAll unlocks the locks of held at once, in the background of the
// caller's context: they were never handed out.
func releaseAll(held map[string]*Lock) {
	var wg sync.WaitGroup
	for _, l := range held {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout(l.currentTTL()))
			defer cancel()
			_ = l.Unlock(ctx)
		})
	}
	wg.Wait()
}

// end closes the set's Done for the first member that ended.
func (s *LockSet) end(l *Lock) {
	s.once.Do(func() {
		s.mu.Lock()
		s.lost = fmt.Errorf("%q: %w", l.Key(), l.Err())
		s.mu.Unlock()
		close(s.done)
	})
}

// Locks returns the set's locks, one per key, in the order of the keys
// given to LockMany.
func (s *LockSet) Locks() []*Lock { return slices.Clone(s.locks) }

// Done returns a channel closed when any member is lost or unlocked: the
// set no longer holds every key.
func (s *LockSet) Done() <-chan struct{} { return s.done }

// Err returns nil while every member is held; after Done closed, the error
// of the member that ended first, naming its key (matching ErrLost for a
// loss, ErrNotHeld after Unlock).
func (s *LockSet) Err() error {
	// A member may have ended before its watcher ran.
	for _, l := range s.locks {
		select {
		case <-l.Done():
			s.end(l)
		default:
			continue
		}
		break
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// Unlock releases every member at once and returns their errors joined
// (nil when all were released).
func (s *LockSet) Unlock(ctx context.Context) error {
	errs := make([]error, len(s.locks))
	var wg sync.WaitGroup
	for i, l := range s.locks {
		wg.Go(func() {
			if err := l.Unlock(ctx); err != nil {
				errs[i] = fmt.Errorf("%q: %w", l.Key(), err)
			}
		})
	}
	wg.Wait()
	s.Err() // Done is closed when Unlock returns
	return errors.Join(errs...)
}
