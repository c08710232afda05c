package drivertest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// testWaiterLeavesNothing checks that waiters whose ctx ends (deadline or
// cancel) return its error and leave nothing behind: the key is free at once
// after the holder's release.
func testWaiterLeavesNothing(t *testing.T, s *suite) {
	a, b, c := s.client(), s.client(), s.client()
	key := s.key("k")
	la := s.tryLock(a, key)

	// A waiter whose deadline passes.
	ctx, cancel := context.WithTimeout(s.ctx, 200*time.Millisecond)
	_, err := b.Lock(ctx, key)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with an expiring ctx = %v, want context.DeadlineExceeded", err)
	}
	// A waiter that is cancelled while waiting.
	ctx, cancel = context.WithCancel(s.ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := b.Lock(ctx, key)
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Lock = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled Lock did not return within 10s")
	}
	s.unlock(la)
	// The key is free at once: the abandoned waiters left nothing behind.
	lc := s.tryLock(c, key)
	s.unlock(lc)
}

// testHandOff checks that a waiting Lock does not return while the key is
// held and is granted after the holder's release.
func testHandOff(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("k")
	la := s.tryLock(a, key, dlock.WithTTL(max(s.ttl, 10*time.Second)))
	type res struct {
		l   *dlock.Lock
		err error
	}
	got := make(chan res, 1)
	go func() {
		ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
		defer cancel()
		l, err := b.Lock(ctx, key)
		got <- res{l, err}
	}()
	time.Sleep(150 * time.Millisecond)
	select {
	case r := <-got:
		t.Fatalf("waiter returned while the key was held: %v", r.err)
	default:
	}
	s.unlock(la)
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("waiter: %v", r.err)
		}
		s.unlock(r.l)
	case <-time.After(25 * time.Second):
		t.Fatal("waiter not granted within 25s of the release")
	}
}

// testFIFO checks, for a driver that declares FIFO, that waiters are
// granted the key in the order they started waiting.
func testFIFO(t *testing.T, s *suite) {
	if !s.capabilities().FIFO {
		t.Skip("driver does not declare FIFO")
	}
	holder := s.client()
	key := s.key("k")
	l := s.tryLock(holder, key)
	const n = 4
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c := s.client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
			defer cancel()
			l, err := c.Lock(ctx, key)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- i
			time.Sleep(10 * time.Millisecond)
			_ = l.Unlock(s.ctx)
		}()
		time.Sleep(200 * time.Millisecond) // queue them one after another
	}
	s.unlock(l)
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Fatalf("grant %d went to waiter %d, want FIFO order", want, got)
		}
		want++
	}
	if want != n {
		t.Fatalf("%d waiters granted, want %d", want, n)
	}
}
