package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// testDriverSharedQueued: a driver.SharedQueuer grants queued permits in
// arrival order, one waiter per freed permit; a writer queued behind
// waiting permits waits for them (and holds back those that join after
// it); an entry of another limit fails; an ended ctx returns at once and
// leaves nothing in the queue. Inspect counts the waiting entries in
// Waiters, which the test reads to know each waiter queued.
func testDriverSharedQueued(t *testing.T, s *suite) {
	if !s.implements(func(d driver.Locker) bool { _, ok := d.(driver.SharedQueuer); return ok }) {
		t.Skip("the driver does not implement driver.SharedQueuer")
	}
	d := s.driver()
	sq := d.(driver.SharedQueuer)
	key := s.key("sq")
	ttl := max(s.capabilities().MinTTL, 20*time.Second)
	req := func(token string, limit int) driver.SharedRequest {
		return driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: ttl, Metadata: token, Hints: driver.Hints{Wait: true}}, Limit: limit}
	}
	type outcome struct {
		token string
		res   driver.Result
		err   error
	}
	got := make(chan outcome, 8)
	wait := func(ctx context.Context, token string, limit int) {
		go func() {
			res, err := sq.AcquireSharedQueued(ctx, req(token, limit))
			got <- outcome{token, res, err}
		}()
	}
	// waiters waits until Inspect counts n waiting entries.
	waiters := func(n int) {
		t.Helper()
		var in driver.Info
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if in, err = d.Inspect(s.ctx, key); err == nil && in.Waiters == n {
				return
			}
		}
		t.Fatalf("Inspect = %+v, %v; want %d waiters", in, err, n)
	}
	next := func() outcome {
		t.Helper()
		select {
		case o := <-got:
			return o
		case <-time.After(15 * time.Second):
			t.Fatal("no queued grant within 15 s of the release")
			return outcome{}
		}
	}
	quiet := func() {
		t.Helper()
		select {
		case o := <-got:
			t.Fatalf("%s returned (%+v, %v) with no permit free", o.token, o.res, o.err)
		case <-time.After(200 * time.Millisecond):
		}
	}

	// Free permits are granted at once.
	var fences []uint64
	for _, token := range []string{"a", "b"} {
		res, err := sq.AcquireSharedQueued(s.ctx, req(token, 2))
		if err != nil || !res.Acquired || res.ValidUntil.IsZero() {
			t.Fatalf("AcquireSharedQueued(%s) on a free permit = %+v, %v; want a grant with ValidUntil", token, res, err)
		}
		fences = append(fences, res.Fence)
	}
	// c, d and e queue in this order; a writer w joins after d.
	wait(s.ctx, "c", 2)
	waiters(1)
	wait(s.ctx, "d", 2)
	waiters(2)
	q, isQueuer := d.(driver.Queuer)
	wdone := make(chan outcome, 1)
	if isQueuer {
		go func() {
			res, err := q.AcquireQueued(s.ctx, driver.Request{Key: key, Token: "w", TTL: ttl, Hints: driver.Hints{Wait: true}})
			wdone <- outcome{"w", res, err}
		}()
		waiters(3)
	}
	wait(s.ctx, "e", 2)
	if isQueuer {
		waiters(4)
	} else {
		waiters(3)
	}
	quiet()

	// An entry of another limit fails, and leaves the queue as it was.
	lctx, lcancel := context.WithTimeout(s.ctx, 10*time.Second)
	_, err := sq.AcquireSharedQueued(lctx, req("x", 3))
	lcancel()
	if !errors.Is(err, driver.ErrLimitMismatch) {
		t.Errorf("AcquireSharedQueued with another limit = %v, want ErrLimitMismatch", err)
	}
	// A waiter whose ctx ends returns at once and leaves the queue.
	cctx, ccancel := context.WithCancel(s.ctx)
	wait(cctx, "gone", 2)
	if isQueuer {
		waiters(5)
	} else {
		waiters(4)
	}
	ccancel()
	if o := next(); o.token != "gone" || !errors.Is(o.err, context.Canceled) {
		t.Fatalf("the cancelled waiter = %s: %+v, %v; want gone with context.Canceled", o.token, o.res, o.err)
	}
	if isQueuer {
		waiters(4)
	} else {
		waiters(3)
	}

	// Each release lets in the first waiter, and only it.
	grant := func(want string) {
		t.Helper()
		o := next()
		if o.err != nil || !o.res.Acquired || o.res.ValidUntil.IsZero() {
			t.Fatalf("queued %s = %+v, %v; want a grant with ValidUntil", o.token, o.res, o.err)
		}
		if o.token != want {
			t.Fatalf("the release let in %s, want %s (arrival order)", o.token, want)
		}
		if last := fences[len(fences)-1]; o.res.Fence <= last {
			t.Errorf("fence of %s = %d, want more than %d", o.token, o.res.Fence, last)
		}
		fences = append(fences, o.res.Fence)
	}
	s.release(d, key, "a")
	grant("c")
	quiet()
	s.release(d, key, "b")
	grant("d")
	quiet()
	if isQueuer {
		// The writer comes before e: it waits for c and d alone.
		s.release(d, key, "c")
		quiet()
		s.release(d, key, "d")
		select {
		case o := <-wdone:
			if o.err != nil || !o.res.Acquired || o.res.Fence <= fences[len(fences)-1] {
				t.Fatalf("the queued writer after the permits before it = %+v, %v; want a grant with a higher fence", o.res, o.err)
			}
			fences = append(fences, o.res.Fence)
		case <-time.After(15 * time.Second):
			t.Fatal("the writer was not granted within 15 s of the last release before it")
		}
		quiet() // e waits for the writer
		s.release(d, key, "w")
		grant("e")
		s.release(d, key, "e")
	} else {
		s.release(d, key, "c")
		grant("e")
		s.release(d, key, "d")
		s.release(d, key, "e")
	}
	if in, err := d.Inspect(s.ctx, key); err != nil || in.Held || in.Waiters != 0 {
		t.Errorf("Inspect after every release = %+v, %v; want free, no waiters", in, err)
	}
}
