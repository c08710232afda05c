package redistest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// RunSharedHandOff checks that releases hand shared grants and writers'
// turns over to waiters through the release announcements: every waiter retries only after 30 s (and a
// holder's lease is a minute), but its context ends after a few seconds,
// so only the release announcement can let it in in time.

const (
	handOffBackoff = 30 * time.Second
	handOffWindow  = 6 * time.Second
)

// held is a grant taken in the background: got reports the attempt's
// outcome, and release ends the grant.
type held struct {
	got     chan error
	release chan struct{}
	done    chan error
}

// holdInBackground calls take in a goroutine under a context that ends
// after handOffWindow; once granted it keeps the grant until release is
// closed, then gives it back.
func holdInBackground(t *testing.T, take func(ctx context.Context) (*dlock.Lock, error)) *held {
	t.Helper()
	h := &held{got: make(chan error, 1), release: make(chan struct{}), done: make(chan error, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), handOffWindow)
	t.Cleanup(cancel)
	go func() {
		l, err := take(ctx)
		h.got <- err
		if err != nil {
			h.done <- err
			return
		}
		<-h.release
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.done <- l.Unlock(uctx)
	}()
	return h
}

// granted waits for h's grant.
func (h *held) granted(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-h.got:
		if err != nil {
			t.Fatalf("%s: %v (not woken by the release)", what, err)
		}
	case <-time.After(handOffWindow + 5*time.Second):
		t.Fatalf("%s: no answer", what)
	}
}

// waiting checks that h has not been granted.
func (h *held) waiting(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-h.got:
		t.Fatalf("%s: got %v while it should wait", what, err)
	default:
	}
}

// unlock ends h's grant.
func (h *held) unlock(t *testing.T, what string) {
	t.Helper()
	close(h.release)
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("%s: Unlock: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Unlock: no answer", what)
	}
}

// retry is the waiters' strategy.
func retry() dlock.LockOption { return dlock.WithRetry(dlock.LinearBackoff(handOffBackoff)) }

// long is the holders' lease.
func long() dlock.LockOption { return dlock.WithTTL(time.Minute) }

// HandOffEnv is what RunSharedHandOff runs on.
type HandOffEnv struct {
	// Open opens a client of the deployment, closed when the test ends.
	Open func(t *testing.T) *dlock.Client
	// Subs returns how many clients subscribe to key's release channel
	// (on every server that must announce a release).
	Subs func(t *testing.T, key string) int
	// Queued, when not nil, returns how many exclusive waiters are queued
	// for key; otherwise Inspect's Waiters tells.
	Queued func(t *testing.T, key string) int
	// SharedQueue says that shared waiters queue too (not Redlock's):
	// permits then go to waiting clients in arrival order.
	SharedQueue bool
}

// RunSharedHandOff runs the hand-off cases of shared grants on env.
func RunSharedHandOff(t *testing.T, env HandOffEnv) {
	subscribed := func(t *testing.T, key string, n int) {
		t.Helper()
		WaitFor(t, 5*time.Second, strconv.Itoa(n)+" subscribers of "+key, func() bool { return env.Subs(t, key) >= n })
	}
	queuedWriter := func(t *testing.T, c *dlock.Client, key string, n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		WaitFor(t, 5*time.Second, "a writer waiting for "+key, func() bool {
			h, err := c.Holders(ctx, key)
			return err == nil && h.WritersWaiting >= n
		})
	}
	queued := func(t *testing.T, c *dlock.Client, key string, n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		WaitFor(t, 5*time.Second, "an exclusive waiter queued for "+key, func() bool {
			if env.Queued != nil {
				return env.Queued(t, key) >= n
			}
			in, err := c.Inspect(ctx, key)
			return err == nil && in.Waiters >= n
		})
	}

	t.Run("PermitToWaiter", func(t *testing.T) {
		key := "handoff-permit"
		a, b := env.Open(t), env.Open(t)
		p := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) {
			return a.Semaphore(key, 1).TryAcquire(ctx, long())
		})
		p.granted(t, "first permit")
		w := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) {
			return b.Semaphore(key, 1).Acquire(ctx, retry(), long())
		})
		subscribed(t, key, 1)
		w.waiting(t, "second permit while the first is out")
		p.unlock(t, "first permit")
		w.granted(t, "waiting permit after the release")
		w.unlock(t, "second permit")
	})

	t.Run("WriterToReaders", func(t *testing.T) {
		key := "handoff-writer"
		a, b, c := env.Open(t), env.Open(t), env.Open(t)
		wr := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) {
			return a.RWMutex(key).TryLock(ctx, long())
		})
		wr.granted(t, "writer")
		r1 := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return b.RWMutex(key).RLock(ctx, retry(), long()) })
		r2 := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return c.RWMutex(key).RLock(ctx, retry(), long()) })
		subscribed(t, key, 2)
		r1.waiting(t, "reader 1 while the writer holds")
		wr.unlock(t, "writer")
		r1.granted(t, "reader 1 after the writer's release")
		r2.granted(t, "reader 2 after the writer's release")
		r1.unlock(t, "reader 1")
		r2.unlock(t, "reader 2")
	})

	t.Run("LastReaderToWriter", func(t *testing.T) {
		key := "handoff-readers"
		a, b, c := env.Open(t), env.Open(t), env.Open(t)
		r1 := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return a.RWMutex(key).TryRLock(ctx, long()) })
		r1.granted(t, "reader 1")
		r2 := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return b.RWMutex(key).TryRLock(ctx, long()) })
		r2.granted(t, "reader 2")
		wr := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return c.RWMutex(key).Lock(ctx, retry(), long()) })
		subscribed(t, key, 1)
		queuedWriter(t, a, key, 1)
		r1.unlock(t, "reader 1")
		wr.waiting(t, "writer while reader 2 holds")
		r2.unlock(t, "reader 2")
		wr.granted(t, "writer after the last reader's release")
		wr.unlock(t, "writer")
	})

	// behind: first holds the key, a writer of another client waits for it
	// (ready tells when it is queued or recorded) and readers of two more
	// clients wait too: first's release lets the writer in, the writer's
	// lets both readers in.
	behind := func(t *testing.T, key string, first func(*dlock.RWMutex, context.Context) (*dlock.Lock, error), ready func(t *testing.T, c *dlock.Client)) {
		a, b, c, d := env.Open(t), env.Open(t), env.Open(t), env.Open(t)
		h := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return first(a.RWMutex(key), ctx) })
		h.granted(t, "first holder")
		wr := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return b.RWMutex(key).Lock(ctx, retry(), long()) })
		subscribed(t, key, 1)
		ready(t, a)
		var readers []*held
		for _, rc := range []*dlock.Client{c, d} {
			readers = append(readers, holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) {
				return rc.RWMutex(key).RLock(ctx, retry(), long())
			}))
		}
		subscribed(t, key, 3)
		readers[0].waiting(t, "reader behind the waiting writer")
		h.unlock(t, "first holder")
		wr.granted(t, "writer after the first holder's release")
		readers[0].waiting(t, "reader while the writer holds")
		wr.unlock(t, "writer")
		for i, r := range readers {
			r.granted(t, "reader "+strconv.Itoa(i+1)+" after the writer's release")
		}
		for i, r := range readers {
			r.unlock(t, "reader "+strconv.Itoa(i+1))
		}
	}

	t.Run("WriterQueuedBehindReaders", func(t *testing.T) {
		behind(t, "handoff-behind-readers",
			func(rw *dlock.RWMutex, ctx context.Context) (*dlock.Lock, error) { return rw.TryRLock(ctx, long()) },
			func(t *testing.T, c *dlock.Client) { queuedWriter(t, c, "handoff-behind-readers", 1) })
	})

	t.Run("ExclusiveQueuedWithReaders", func(t *testing.T) {
		// The writer is queued behind another writer: the first writer's
		// release names it, and wakes the readers too, which find the key
		// kept for it.
		behind(t, "handoff-queued",
			func(rw *dlock.RWMutex, ctx context.Context) (*dlock.Lock, error) { return rw.TryLock(ctx, long()) },
			func(t *testing.T, c *dlock.Client) { queued(t, c, "handoff-queued", 1) })
	})

	t.Run("PermitsInOrder", func(t *testing.T) {
		// Two permits are out and four permit-takers of other clients
		// queue one after the other, then a fifth: each release lets in
		// the first waiter still waiting, and only that one.
		if !env.SharedQueue {
			t.Skip("shared waiters do not queue on this deployment")
		}
		key := "handoff-order"
		owner := env.Open(t)
		sem := func(c *dlock.Client) *dlock.Semaphore { return c.Semaphore(key, 2) }
		var holders []*held
		for i := range 2 {
			p := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return sem(owner).TryAcquire(ctx, long()) })
			p.granted(t, "permit "+strconv.Itoa(i+1))
			holders = append(holders, p)
		}
		var waiters []*held
		for i := range 5 {
			c := env.Open(t)
			waiters = append(waiters, holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) {
				return sem(c).Acquire(ctx, retry(), long())
			}))
			subscribed(t, key, i+1)
			queued(t, owner, key, i+1)
		}
		// Each release lets in the next waiter; the permits out are then
		// the earliest two still held.
		holders = append(holders, waiters...)
		for i, w := range waiters {
			holders[i].unlock(t, "permit ahead of waiter "+strconv.Itoa(i+1))
			w.granted(t, "waiter "+strconv.Itoa(i+1)+" after a release")
			for j := i + 1; j < len(waiters); j++ {
				waiters[j].waiting(t, "waiter "+strconv.Itoa(j+1)+" behind waiter "+strconv.Itoa(i+1))
			}
		}
		for i, h := range holders[len(waiters):] {
			h.unlock(t, "waiter "+strconv.Itoa(len(waiters)-1+i))
		}
	})

	t.Run("PermitWithExclusiveQueued", func(t *testing.T) {
		// An exclusive lock holds a semaphore's key, a second exclusive
		// locker is queued for it and a permit-taker of another client
		// waits: the holder's release goes to the queued locker, whose
		// release lets the permit-taker in.
		key := "handoff-permit-queued"
		a, b, c := env.Open(t), env.Open(t), env.Open(t)
		x0 := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return a.TryLock(ctx, key, long()) })
		x0.granted(t, "exclusive holder")
		x1 := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) { return b.Lock(ctx, key, retry(), long()) })
		subscribed(t, key, 1)
		queued(t, a, key, 1)
		p := holdInBackground(t, func(ctx context.Context) (*dlock.Lock, error) {
			return c.Semaphore(key, 2).Acquire(ctx, retry(), long())
		})
		subscribed(t, key, 2)
		x0.unlock(t, "exclusive holder")
		x1.granted(t, "queued locker after the holder's release")
		p.waiting(t, "permit while the queued locker holds")
		x1.unlock(t, "queued locker")
		p.granted(t, "permit after the queued locker's release")
		p.unlock(t, "permit")
	})
}

// WaitFor polls cond every 5 ms until it holds or d passes.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
