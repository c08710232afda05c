package bench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlock-go/dlock"
)

// holdWorkers is how many goroutines take (and release) the keys of the
// held-locks scenario.
const holdWorkers = 16

// openClient opens one dlock Client and returns its clean-up.
type openClient func() (*dlock.Client, func(), error)

// dlockLock is Lock with the Client's defaults, and Unlock.
func dlockLock(c *dlock.Client, key string) lockFunc {
	return func(ctx context.Context) (func(context.Context) error, error) {
		l, err := c.Lock(ctx, key)
		if err != nil {
			return nil, err
		}
		return l.Unlock, nil
	}
}

// dlockContenders gives each contender its own Client, as separate
// processes would have.
func dlockContenders(open openClient) func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
	return func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
		return openN(n, func(int) (lockFunc, func(), error) {
			c, closeFn, err := open()
			if err != nil {
				return nil, nil, err
			}
			return dlockLock(c, key), closeFn, nil
		})
	}
}

// sharedDlockContenders puts every contender on one Client, as goroutines
// of one service would be: they queue locally, and the backend sees one
// contender.
func sharedDlockContenders(open openClient) func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
	return func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
		c, closeFn, err := open()
		if err != nil {
			return nil, nil, err
		}
		locks := make([]lockFunc, n)
		for i := range locks {
			locks[i] = dlockLock(c, key)
		}
		return locks, closeFn, nil
	}
}

// dlockHold takes every key on one Client with ttl and leaves the rest to
// dlock's auto-refresh.
func dlockHold(open openClient) func(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error) {
	return func(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error) {
		c, closeFn, err := open()
		if err != nil {
			return nil, err
		}
		h := &dlockHeld{locks: make([]*dlock.Lock, len(keys)), close: closeFn}
		err = parallel(len(keys), holdWorkers, func(i int) error {
			l, err := c.TryLock(ctx, keys[i], dlock.WithTTL(ttl))
			h.locks[i] = l
			return err
		})
		if err != nil {
			_ = h.release(ctx)
			return nil, err
		}
		return h, nil
	}
}

type dlockHeld struct {
	locks []*dlock.Lock
	close func()
}

func (h *dlockHeld) lost() int {
	n := 0
	for _, l := range h.locks {
		if l != nil && l.Err() != nil {
			n++
		}
	}
	return n
}

func (h *dlockHeld) release(ctx context.Context) error {
	var first firstErr
	_ = parallel(len(h.locks), holdWorkers, func(i int) error {
		if l := h.locks[i]; l != nil {
			err := l.Unlock(ctx)
			if l.Err() != nil && errors.Is(err, dlock.ErrNotHeld) {
				err = nil // lost during the window: counted by lost
			}
			first.set(err)
		}
		return nil
	})
	h.close()
	return first.get()
}

// loopHeld is the refresh an application writes around a library that has
// none: one goroutine per lock, refreshing every TTL/3.
type loopHeld struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	failed   atomic.Int64
	releases []func(context.Context) error
	lostOne  []*atomic.Bool // per lock: its refresh failed
	close    func(context.Context) error
}

func newLoopHeld(closeFn func(context.Context) error) *loopHeld {
	return &loopHeld{stop: make(chan struct{}), close: closeFn}
}

// add starts refreshing one lock. A lock whose refresh fails counts as lost
// and is not refreshed again.
func (h *loopHeld) add(ttl time.Duration, refresh, release func(context.Context) error) {
	h.releases = append(h.releases, release)
	lost := new(atomic.Bool)
	h.lostOne = append(h.lostOne, lost)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), ttl)
			err := refresh(ctx)
			cancel()
			if err != nil {
				lost.Store(true)
				h.failed.Add(1)
				return
			}
		}
	}()
}

func (h *loopHeld) lost() int { return int(h.failed.Load()) }

func (h *loopHeld) release(ctx context.Context) error {
	close(h.stop)
	h.wg.Wait()
	var first firstErr
	_ = parallel(len(h.releases), holdWorkers, func(i int) error {
		if !h.lostOne[i].Load() { // a lost lock is counted by lost
			first.set(h.releases[i](ctx))
		}
		return nil
	})
	first.set(h.close(ctx))
	return first.get()
}

// firstErr keeps the first non-nil error set, from any goroutine.
type firstErr struct {
	mu  sync.Mutex
	err error
}

func (f *firstErr) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
