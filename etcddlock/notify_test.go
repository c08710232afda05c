package etcddlock

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestHandOff: shared waiters wake on the release notification, not on
// their backoff. Each waiter retries only every 30 s and the holders' TTL
// is a minute, so only a notification can hand over within the test's
// deadline: a permit to a permit-taker of another client, a writer's
// release to the readers of two other clients, and the last reader's
// release to a writer of another client (queued: it waits in the key's
// queue, not on notifications).
func TestHandOff(t *testing.T) {
	srv := testserver.StartEtcd(t)
	url := "etcd://" + srv.Addr()
	// client opens a Client over a driver of its own, returned to see
	// its watches and shared attempts.
	client := func() (*dlock.Client, *sharedCounter) {
		d := &sharedCounter{etcdDriver: ownDriver(t, t.Context(), url)}
		c := dlock.NewClient(d)
		t.Cleanup(func() { _ = c.Close() })
		return c, d
	}
	// watching reports whether d watches key's releases and its waiter
	// made the attempt that follows the subscription: the waiter now
	// sleeps on its backoff.
	watching := func(d *sharedCounter, key string) func() bool {
		return func() bool {
			d.wmu.Lock()
			defer d.wmu.Unlock()
			return d.watches[key] != nil && d.answered.Load() >= 2
		}
	}
	hold := []dlock.LockOption{dlock.WithTTL(time.Minute)}
	slow := []dlock.LockOption{dlock.WithRetry(dlock.ExponentialBackoff(30*time.Second, 30*time.Second))}

	t.Run("Permit", func(t *testing.T) {
		ctx := testCtx(t, 10*time.Second)
		a, _ := client()
		b, bd := client()
		p, err := a.Semaphore("handoff/sem", 1).TryAcquire(ctx, hold...)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			q, err := b.Semaphore("handoff/sem", 1).Acquire(ctx, slow...)
			if err == nil {
				err = q.Unlock(context.Background())
			}
			got <- err
		}()
		waitFor(t, watching(bd, "handoff/sem"))
		if err := p.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("the waiting permit-taker after the release: %v", err)
		}
	})

	t.Run("Readers", func(t *testing.T) {
		ctx := testCtx(t, 10*time.Second)
		w, _ := client()
		wl, err := w.RWMutex("handoff/rw").TryLock(ctx, hold...)
		if err != nil {
			t.Fatal(err)
		}
		type outcome struct {
			l   *dlock.Lock
			err error
		}
		got := make(chan outcome, 2)
		for range 2 {
			r, rd := client()
			go func() {
				l, err := r.RWMutex("handoff/rw").RLock(ctx, slow...)
				got <- outcome{l, err}
			}()
			waitFor(t, watching(rd, "handoff/rw"))
		}
		if err := wl.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		// Both in at once: neither is released before the other got in.
		for range 2 {
			o := <-got
			if o.err != nil {
				t.Fatalf("a waiting reader after the writer's release: %v", o.err)
			}
			defer o.l.Unlock(context.Background())
		}
	})

	t.Run("Writer", func(t *testing.T) {
		ctx := testCtx(t, 10*time.Second)
		r, _ := client()
		w, _ := client()
		var readers []*dlock.Lock
		for range 2 {
			l, err := r.RWMutex("handoff/rw-w").TryRLock(ctx, hold...)
			if err != nil {
				t.Fatal(err)
			}
			readers = append(readers, l)
		}
		got := make(chan error, 1)
		go func() {
			l, err := w.RWMutex("handoff/rw-w").Lock(ctx, slow...)
			if err == nil {
				err = l.Unlock(context.Background())
			}
			got <- err
		}()
		waitFor(t, func() bool {
			in, err := r.Inspect(ctx, "handoff/rw-w")
			return err == nil && in.Waiters > 0
		})
		for _, l := range readers {
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-got; err != nil {
			t.Fatalf("the waiting writer after the last reader's release: %v", err)
		}
	})
}

// sharedCounter is the driver, every optional interface included, counting
// the shared attempts it answered.
type sharedCounter struct {
	*etcdDriver
	answered atomic.Int32
}

func (d *sharedCounter) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	defer d.answered.Add(1)
	return d.etcdDriver.AcquireShared(ctx, req)
}
