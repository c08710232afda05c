package zkdlock

import (
	"context"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// TestHandOff: shared waiters wait in the key's queue and wake on the
// children watch of the key node, not on their backoff or the fallback
// poll. Each waiter retries only every 30 s and the holders' TTL is 30 s
// (the driver's most), while the deadline is 10 s; and the wake-ups that
// came after the waiters were queued are counted, so a hand-off by the 2 s
// fallback poll fails too. A permit goes to a permit-taker of another
// client, a writer's release to the readers of two other clients, and the
// last reader's release to a writer of another client (queued: it waits
// on its predecessor).
func TestHandOff(t *testing.T) {
	z := startStandalone(t)
	url := "zk://" + z.Addr() + "/handoff"
	client := func() (*dlock.Client, *zkDriver) {
		d := openDriver(t, url)
		c := dlock.NewClient(d)
		t.Cleanup(func() { _ = c.Close() })
		return c, d
	}
	observer := connect(t, z.Addrs(), 5*time.Second, nil)
	// queued reports whether d's watch of key is set and key has nodes
	// lock nodes: d's waiter is in the queue and decides from the watch's
	// listings now.
	queued := func(d *zkDriver, key string, nodes int) func() bool {
		return func() bool {
			d.mu.Lock()
			w := d.watches[d.keyPath(key)]
			d.mu.Unlock()
			if w == nil {
				return false
			}
			select {
			case <-w.ready:
			default:
				return false
			}
			kids, _, err := observer.Children(d.keyPath(key))
			return err == nil && len(kids) == nodes
		}
	}
	hold := []dlock.LockOption{dlock.WithTTL(30 * time.Second)}
	slow := []dlock.LockOption{dlock.WithRetry(dlock.ExponentialBackoff(30*time.Second, 30*time.Second))}

	t.Run("Permit", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
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
		waitFor(t, queued(bd, "handoff/sem", 2))
		woken := bd.wakeups.Load()
		if err := p.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("the waiting permit-taker after the release: %v", err)
		}
		if bd.wakeups.Load() == woken {
			t.Error("the permit-taker got in without a wake-up after the release")
		}
	})

	t.Run("Readers", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
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
		var drivers []*zkDriver
		for i := range 2 {
			r, rd := client()
			drivers = append(drivers, rd)
			go func() {
				l, err := r.RWMutex("handoff/rw").RLock(ctx, slow...)
				got <- outcome{l, err}
			}()
			waitFor(t, queued(rd, "handoff/rw", 2+i))
		}
		var woken []int64
		for _, d := range drivers {
			woken = append(woken, d.wakeups.Load())
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
		for i, d := range drivers {
			if d.wakeups.Load() == woken[i] {
				t.Errorf("reader %d got in without a wake-up after the release", i)
			}
		}
	})

	t.Run("Writer", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
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

// waitFor waits up to 10 s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10 s")
}
