package sqlleasetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// RunSharedHandoff checks that shared waits are woken by releases, not
// polls, on clients of one backend (three or more) whose waiters use a
// retry backoff far longer than the test's deadline, with holders whose
// leases outlast it too: a released permit goes to a permit-taker waiting
// on another client; a writer's release lets readers waiting on two other
// clients both in; the last reader's release lets a waiting writer in,
// also when a reader waits behind that writer (and then the reader).
// Only a notification can get a waiter in before its deadline. Keys are
// under prefix.
func RunSharedHandoff(t *testing.T, ctx context.Context, clients []*dlock.Client, prefix string) {
	t.Helper()
	if len(clients) < 3 {
		t.Fatalf("RunSharedHandoff needs 3 clients, has %d", len(clients))
	}
	a, b, c := clients[0], clients[1], clients[2]
	long := []dlock.LockOption{dlock.WithTTL(time.Minute), dlock.WithAutoRefresh(false)}
	wait := append([]dlock.LockOption{dlock.WithRetry(dlock.LinearBackoff(time.Minute))}, long...)
	// waitFor runs fn in the background with a deadline of its own and
	// returns its outcome's channel.
	waitFor := func(what string, fn func(ctx context.Context) (*dlock.Lock, error)) <-chan *dlock.Lock {
		out := make(chan *dlock.Lock, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			l, err := fn(wctx)
			if err != nil {
				t.Errorf("%s: %v (not woken by the release)", what, err)
			}
			out <- l
		}()
		return out
	}
	must := func(l *dlock.Lock, err error) *dlock.Lock {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	unlock := func(l *dlock.Lock) {
		t.Helper()
		if l == nil {
			return
		}
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock(%s): %v", l.Key(), err)
		}
	}
	got := func(ch <-chan *dlock.Lock) *dlock.Lock {
		t.Helper()
		select {
		case l := <-ch:
			return l
		case <-ctx.Done():
			t.Fatal("a waiter never returned")
			return nil
		}
	}
	// settle gives a waiter the time to make its first attempt, be
	// refused and start waiting; if it is slower the test proves less but
	// does not fail.
	settle := func() { time.Sleep(200 * time.Millisecond) }

	// A permit released: the waiting permit-taker of another client.
	sem := prefix + "sem"
	held := must(a.Semaphore(sem, 1).TryAcquire(ctx, long...))
	permit := waitFor("Semaphore.Acquire", func(ctx context.Context) (*dlock.Lock, error) {
		return b.Semaphore(sem, 1).Acquire(ctx, wait...)
	})
	settle()
	unlock(held)
	unlock(got(permit))

	// A writer's release: readers waiting on two other clients both in.
	rw := prefix + "rw"
	w := must(a.RWMutex(rw).TryLock(ctx, long...))
	var readers []<-chan *dlock.Lock
	for i, cl := range []*dlock.Client{b, c} {
		readers = append(readers, waitFor(fmt.Sprintf("RLock %d", i), func(ctx context.Context) (*dlock.Lock, error) {
			return cl.RWMutex(rw).RLock(ctx, wait...)
		}))
	}
	settle()
	unlock(w)
	r1, r2 := got(readers[0]), got(readers[1])
	if r1 == nil || r2 == nil {
		unlock(r1)
		unlock(r2)
		t.FailNow()
	}

	// The last reader's release: the waiting writer.
	writer := waitFor("Lock", func(ctx context.Context) (*dlock.Lock, error) {
		return a.RWMutex(rw).Lock(ctx, wait...)
	})
	settle()
	unlock(r1)
	unlock(r2)
	unlock(got(writer))

	// A reader's release while a writer and a reader wait behind it: the
	// writer first (its record holds the reader back), then the reader.
	anchor := must(a.RWMutex(rw).TryRLock(ctx, long...))
	writer = waitFor("Lock behind a reader", func(ctx context.Context) (*dlock.Lock, error) {
		return b.RWMutex(rw).Lock(ctx, wait...)
	})
	settle()
	reader := waitFor("RLock behind a writer", func(ctx context.Context) (*dlock.Lock, error) {
		return c.RWMutex(rw).RLock(ctx, wait...)
	})
	settle()
	unlock(anchor)
	w = got(writer)
	select {
	case l := <-reader:
		unlock(l)
		unlock(w)
		t.Fatal("a reader got in beside the waiting writer")
	default:
	}
	unlock(w)
	unlock(got(reader))
}
