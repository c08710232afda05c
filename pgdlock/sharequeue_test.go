package pgdlock

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestQueuedShareWakesOne: waiting permits queue as rows of the key, and a
// release sends a statement from the waiter it lets in alone (its own
// notification), in arrival order: the other waiters send nothing.
// Inspect counts the queued shares as waiters.
func TestQueuedShareWakesOne(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	open := func() (*pgDriver, *countingQuerier) {
		u, err := driver.ParseURL(pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		dl, err := OpenURL(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = dl.Close() })
		d := pgOf(t, dl)
		cq := &countingQuerier{querier: d.q}
		d.q = cq
		return d, cq
	}
	const key, limit, waiters = "wake-one", 2, 5
	req := func(token string) driver.SharedRequest {
		return driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: 20 * time.Second, Hints: driver.Hints{Wait: true}}, Limit: limit}
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
		// Other waiters would wake within a few ms; the fallback poll is
		// 2 s away.
		time.Sleep(150 * time.Millisecond)
		if got := sent() - before; got != 1 {
			t.Errorf("release of %s: the waiters sent %d statements, want 1 (the granted one's)", release[i], got)
		}
	}
	select {
	case g := <-granted:
		t.Fatalf("waiter %d returned (%+v, %v) with no permit free", g.i, g.res, g.err)
	default:
	}
}
