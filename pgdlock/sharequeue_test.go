package pgdlock

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
	"github.com/dlock-go/dlock/internal/testserver"
)

// openURL opens a driver from rawURL, closed when the test ends.
func openURL(t *testing.T, ctx context.Context, rawURL string) driver.Locker {
	t.Helper()
	u, err := driver.ParseURL(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenURL(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// TestQueuedShareWakesOne: waiting permits queue as rows of the key, and a
// release grants the permit it frees to the first of them itself, in
// arrival order, with the next fence: the waiter learns it from its own
// notification, and no waiter sends a statement. Inspect counts the queued
// shares as waiters.
func TestQueuedShareWakesOne(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	open := func() (*pgDriver, *countingQuerier) {
		d := pgOf(t, openURL(t, ctx, pg.URL()))
		cq := &countingQuerier{querier: d.q}
		d.q = cq
		return d, cq
	}
	// No fallback poll within the test: only notifications wake waiters.
	defer func(p time.Duration) { queuePoll = p }(queuePoll)
	queuePoll = time.Minute
	const key, limit, waiters = "wake-one", 2, 5
	req := func(token string) driver.SharedRequest {
		return driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: 3 * time.Minute, Hints: driver.Hints{Wait: true}}, Limit: limit}
	}
	holder, _ := open()
	for _, tok := range []string{"h0", "h1"} {
		if res, err := holder.AcquireSharedQueued(ctx, req(tok)); err != nil || !res.Acquired {
			t.Fatalf("AcquireSharedQueued(%s) of a free permit = %+v, %v", tok, res, err)
		}
	}
	type grant struct {
		i   int
		res driver.Result
		err error
	}
	granted := make(chan grant, waiters)
	var counts []*countingQuerier
	for i := range waiters {
		d, cq := open()
		counts = append(counts, cq)
		go func() {
			res, err := d.AcquireSharedQueued(ctx, req(fmt.Sprint("w", i)))
			granted <- grant{i, res, err}
		}()
		// One at a time, so that the arrival order is known.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			in, err := holder.Inspect(ctx, key)
			if err == nil && in.Waiters == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiter %d not queued: Inspect = %+v, %v", i, in, err)
			}
		}
	}
	sent := func() (n int64) {
		for _, cq := range counts {
			n += cq.n.Load()
		}
		return n
	}
	release := []string{"h0", "h1", "w0", "w1", "w2"}
	var fence uint64
	for i := range waiters {
		before := sent()
		if err := holder.ReleaseShared(ctx, key, release[i]); err != nil {
			t.Fatalf("ReleaseShared(%s): %v", release[i], err)
		}
		var g grant
		select {
		case g = <-granted:
		case <-time.After(10 * time.Second):
			t.Fatalf("no waiter granted within 10 s of releasing %s", release[i])
		}
		if g.err != nil || !g.res.Acquired || g.res.ValidUntil.IsZero() {
			t.Fatalf("waiter %d = %+v, %v; want a grant with ValidUntil", g.i, g.res, g.err)
		}
		if g.i != i {
			t.Fatalf("release %d let in waiter %d, want %d (arrival order)", i, g.i, i)
		}
		if g.res.Fence <= fence {
			t.Errorf("waiter %d's fence = %d, want more than %d", i, g.res.Fence, fence)
		}
		fence = g.res.Fence
		h, err := holder.Holders(ctx, key)
		if err != nil || len(h.Holders) != limit || h.Holders[limit-1].Fence != fence {
			t.Errorf("Holders after granting waiter %d = %+v, %v; want %d grants, the newest with fence %d", i, h, err, limit, fence)
		}
		// Other waiters would wake within a few ms; the fallback poll is
		// a minute away.
		time.Sleep(150 * time.Millisecond)
		if got := sent() - before; got != 0 {
			t.Errorf("release of %s: the waiters sent %d statements, want none", release[i], got)
		}
	}
	select {
	case g := <-granted:
		t.Fatalf("waiter %d returned (%+v, %v) with no permit free", g.i, g.res, g.err)
	default:
	}
}

// TestQueuedShareGrantUnheard: a release without notifications
// (notify=false) still grants the first queued share, which finds out
// with its next statement; a waiter that gives up after such a grant,
// before it heard of it, gives the permit back, and the next waiter gets it.
func TestQueuedShareGrantUnheard(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	open := func(query string) driver.Locker { return openURL(t, ctx, pg.URL()+query) }
	const key = "unheard"
	req := func(token string) driver.SharedRequest {
		return driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: 20 * time.Second, Hints: driver.Hints{Wait: true}}, Limit: 1}
	}
	silent := open("&notify=false").(driver.SharedLocker)
	if res, err := silent.AcquireShared(ctx, req("h")); err != nil || !res.Acquired {
		t.Fatalf("AcquireShared(h) = %+v, %v", res, err)
	}
	type outcome struct {
		res driver.Result
		err error
	}
	wait := func(ctx context.Context, token string, n int) <-chan outcome {
		d := open("").(driver.SharedQueuer)
		out := make(chan outcome, 1)
		go func() {
			res, err := d.AcquireSharedQueued(ctx, req(token))
			out <- outcome{res, err}
		}()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			in, err := silent.Inspect(ctx, key)
			if err == nil && in.Waiters == n {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not queued: Inspect = %+v, %v", token, in, err)
			}
		}
	}
	w1ctx, w1cancel := context.WithCancel(ctx)
	w1 := wait(w1ctx, "w1", 1)
	w2 := wait(ctx, "w2", 2)
	w3 := wait(ctx, "w3", 3)

	// The silent release grants w1, which hears nothing and gives up.
	if err := silent.(driver.ShareKeeper).ReleaseShared(ctx, key, "h"); err != nil {
		t.Fatalf("ReleaseShared(h): %v", err)
	}
	w1cancel()
	if o := <-w1; !errors.Is(o.err, context.Canceled) {
		// It may have polled in between and taken the grant.
		t.Logf("w1 = %+v, %v (polled before it gave up)", o.res, o.err)
		if o.err != nil || !o.res.Acquired {
			t.Fatalf("w1 = %+v, %v; want its grant or context.Canceled", o.res, o.err)
		}
		_ = silent.(driver.ShareKeeper).ReleaseShared(ctx, key, "w1")
	}
	// w1's grant went back: w2 gets the permit long before w1's lease
	// could run out.
	var o outcome
	select {
	case o = <-w2:
	case <-time.After(10 * time.Second):
		t.Fatal("w2 not granted within 10 s of w1 giving up")
	}
	if o.err != nil || !o.res.Acquired {
		t.Fatalf("w2 = %+v, %v; want a grant", o.res, o.err)
	}
	// A silent release of w2 grants w3, which learns it from its next
	// statement, with the fence the grant has.
	if err := silent.(driver.ShareKeeper).ReleaseShared(ctx, key, "w2"); err != nil {
		t.Fatalf("ReleaseShared(w2): %v", err)
	}
	select {
	case o = <-w3:
	case <-time.After(10 * time.Second):
		t.Fatal("w3 not granted within 10 s of the silent release")
	}
	h, err := silent.Holders(ctx, key)
	if o.err != nil || !o.res.Acquired || err != nil || len(h.Holders) != 1 || h.Holders[0].Fence != o.res.Fence {
		t.Fatalf("w3 = %+v, %v; Holders = %+v, %v; want w3 granted with the one grant's fence", o.res, o.err, h, err)
	}
}

// TestQueuedShareCrashedWaiter: a queued share whose waiter vanished
// (its row written once, never again: a crashed process) holds the queue
// up for at most its TTL. The release may grant it the permit, whose lease
// then ends where the row's did; the waiter behind it gets the permit
// after that, never a whole TTL later.
func TestQueuedShareCrashedWaiter(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	open := func() *pgDriver { return pgOf(t, openURL(t, ctx, pg.URL())) }
	const key, crashTTL = "crashed-waiter", 3 * time.Second
	req := func(token string, ttl time.Duration) driver.SharedRequest {
		return driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: ttl, Hints: driver.Hints{Wait: true}}, Limit: 1}
	}
	d := open()
	if res, err := d.AcquireSharedQueued(ctx, req("h", 20*time.Second)); err != nil || !res.Acquired {
		t.Fatalf("AcquireSharedQueued(h) = %+v, %v", res, err)
	}
	// The crashed waiter: one statement of AcquireSharedQueued, then
	// nothing.
	var (
		verdict         string
		fence, holderUS int64
		limit           int
	)
	args := []any{[]byte(key), []byte("crashed"), sqllease.Micros(crashTTL), "", 1, "00000000000000000000000000000000"}
	if _, err := d.q.lockedQueryRow(ctx, d.st.lockRow, 1, d.st.acquireQueued, args, &verdict, &fence, &holderUS, &limit); err != nil || verdict != "q" {
		t.Fatalf("the crashed waiter's statement = %q, %v; want q", verdict, err)
	}
	crashed := time.Now()
	type outcome struct {
		res driver.Result
		err error
	}
	got := make(chan outcome, 1)
	w := open()
	go func() {
		res, err := w.AcquireSharedQueued(ctx, req("w", 20*time.Second))
		got <- outcome{res, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if in, err := d.Inspect(ctx, key); err == nil && in.Waiters == 2 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("w not queued: Inspect = %+v, %v", in, err)
		}
	}
	if err := d.ReleaseShared(ctx, key, "h"); err != nil {
		t.Fatalf("ReleaseShared(h): %v", err)
	}
	var o outcome
	select {
	case o = <-got:
	case <-time.After(crashTTL + 10*time.Second):
		t.Fatalf("w not granted within %v of the crashed waiter's last statement", crashTTL+10*time.Second)
	}
	if o.err != nil || !o.res.Acquired {
		t.Fatalf("w = %+v, %v; want a grant", o.res, o.err)
	}
	if since := time.Since(crashed); since < crashTTL-100*time.Millisecond {
		t.Errorf("w granted %v after the crashed waiter's statement, before its row's TTL %v ran out", since, crashTTL)
	}
}

// TestQueuedShareRidesOutRestart: a queued share whose statements meet a
// server restart keeps waiting (its ctx has not ended) and is granted by
// the release after it; the portable layer never sees the outage.
func TestQueuedShareRidesOutRestart(t *testing.T) {
	pg := testserver.StartPostgres(t)
	// Polls during the outage: statements that fail on the dead server.
	defer func(p time.Duration) { queuePoll = p }(queuePoll)
	queuePoll = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	open := func() *pgDriver { return pgOf(t, openURL(t, ctx, pg.URL())) }
	const key = "restart"
	req := func(token string) driver.SharedRequest {
		return driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: 60 * time.Second, Hints: driver.Hints{Wait: true}}, Limit: 1}
	}
	holder := open()
	if res, err := holder.AcquireSharedQueued(ctx, req("h")); err != nil || !res.Acquired {
		t.Fatalf("AcquireSharedQueued(h) = %+v, %v", res, err)
	}
	type outcome struct {
		res driver.Result
		err error
	}
	got := make(chan outcome, 1)
	w := open()
	go func() {
		res, err := w.AcquireSharedQueued(ctx, req("w"))
		got <- outcome{res, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if in, err := holder.Inspect(ctx, key); err == nil && in.Waiters == 1 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("w not queued: Inspect = %+v, %v", in, err)
		}
	}
	pg.Restart()
	select {
	case o := <-got:
		t.Fatalf("the waiter returned (%+v, %v) across the restart, with the permit still held", o.res, o.err)
	case <-time.After(300 * time.Millisecond):
	}
	releaser := open()
	for i := 0; ; i++ {
		err := releaser.ReleaseShared(ctx, key, "h")
		if err == nil {
			break
		}
		if !errors.Is(err, driver.ErrUnavailable) || i == 100 {
			t.Fatalf("ReleaseShared(h) after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case o := <-got:
		if o.err != nil || !o.res.Acquired {
			t.Fatalf("the waiter after the restart = %+v, %v; want the permit", o.res, o.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter was not granted within 20 s of the release after the restart")
	}
}
