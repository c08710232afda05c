package redisdlock_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestQueueFIFO: waiters that are separate clients (as separate processes
// would be) get the key in the order they started waiting, each woken by
// the release before it, and no release wakes a waiter that is not first.
func TestQueueFIFO(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	queue, _ := d.QueueKeys("fifo")
	holder := dlock.NewClient(d)
	l, err := holder.TryLock(ctx, "fifo", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}

	const n = 5
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
		errs  = make(chan error, n)
	)
	for i := range n {
		c := openURL(t, srv.URL())
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A long backoff: only the release wake-ups can hand the key
			// over within the test's deadline.
			wl, err := c.Lock(ctx, "fifo", dlock.WithTTL(time.Minute), dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
			if err != nil {
				errs <- fmt.Errorf("waiter %d: %w", i, err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			if err := wl.Unlock(ctx); err != nil {
				errs <- fmt.Errorf("waiter %d: Unlock: %w", i, err)
			}
		}()
		// The next waiter starts once this one is in the queue.
		waitFor(t, 10*time.Second, "waiter "+strconv.Itoa(i)+" queued", func() bool {
			return rdb.ZCard(ctx, queue).Val() == int64(i+1)
		})
	}
	if in, err := holder.Inspect(ctx, "fifo"); err != nil || !in.Held || in.Waiters != n {
		t.Errorf("Inspect = %+v, %v; want held with %d waiters", in, err, n)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, got := range order {
		if got != i {
			t.Fatalf("grant order = %v, want 0..%d in order", order, n-1)
		}
	}
	if len(order) != n {
		t.Fatalf("grants = %v, want %d", order, n)
	}
	if got := rdb.Exists(ctx, queue).Val(); got != 0 {
		t.Errorf("queue key still exists after every waiter got the key")
	}
}

// TestQueueKeptForFirstWaiter: a free key is kept for the first live waiter
// in its queue, so TryLock of another client fails meanwhile; a waiter that
// went away without leaving (a crash) keeps it at most the queue entry's
// lifetime, after which others get it.
func TestQueueKeptForFirstWaiter(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	queue, waits := d.QueueKeys("kept")
	c := dlock.NewClient(d)

	// A waiter of a crashed process: in the queue, with a deadline 2 s
	// from now on the server's clock.
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	ms := now.UnixMilli()
	rdb.ZAdd(ctx, queue, redisZ(float64(ms), "crashed"))
	rdb.ZAdd(ctx, waits, redisZ(float64(ms+2000), "crashed"))
	rdb.PExpire(ctx, queue, 10*time.Second)
	rdb.PExpire(ctx, waits, 10*time.Second)

	_, err = c.TryLock(ctx, "kept")
	if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock while the key is kept for the first waiter = %v, want ErrNotAcquired", err)
	}
	in, err := c.Inspect(ctx, "kept")
	if err != nil || in.Held {
		t.Fatalf("Inspect = %+v, %v; want not held", in, err)
	}
	// Lock waits for the crashed waiter's entry to run out, and no longer.
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	l, err := c.Lock(lctx, "kept", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
	if err != nil {
		t.Fatalf("Lock after the crashed waiter's entry ran out: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if n := rdb.ZCard(ctx, queue).Val(); n != 0 {
		t.Errorf("queue holds %d entries after the grant, want 0", n)
	}
}

// TestQueueLeave: a waiter whose context ends leaves the queue at once, so
// the key is not kept for it, and the waiter behind it is woken when the
// key is released.
func TestQueueLeave(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	queue, _ := d.QueueKeys("leave")
	holder := dlock.NewClient(d)
	l, err := holder.TryLock(ctx, "leave", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	slow := openURL(t, srv.URL())
	next := openURL(t, srv.URL())
	long := dlock.WithRetry(dlock.LinearBackoff(time.Hour))

	sctx, cancelSlow := context.WithCancel(ctx)
	slowErr := make(chan error, 1)
	go func() {
		_, err := slow.Lock(sctx, "leave", long)
		slowErr <- err
	}()
	waitFor(t, 10*time.Second, "first waiter queued", func() bool { return rdb.ZCard(ctx, queue).Val() == 1 })
	got := lockInBackground(ctx, next, "leave", long)
	waitFor(t, 10*time.Second, "second waiter queued", func() bool { return rdb.ZCard(ctx, queue).Val() == 2 })

	cancelSlow()
	if err := <-slowErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	waitFor(t, 10*time.Second, "cancelled waiter out of the queue", func() bool { return rdb.ZCard(ctx, queue).Val() == 1 })
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second waiter: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("second waiter not woken by the release")
	}
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

// scriptCounter counts the script calls a go-redis client sends.
type scriptCounter struct{ n atomic.Int64 }

func (c *scriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (c *scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestQueueWarmWaiter: a client that waits for a key again while its
// subscription to the key's releases is still up (it lingers after a
// wait) joins the queue with its first attempt and takes the key with its
// second, when the release names it: two round trips per contended Lock.
func TestQueueWarmWaiter(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	hd, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	queue, _ := hd.QueueKeys("warm")
	holder := dlock.NewClient(hd)
	wd, wrdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	var count scriptCounter
	wrdb.AddHook(&count)
	waiter := dlock.NewClient(wd)
	long := dlock.WithRetry(dlock.LinearBackoff(time.Hour))

	for round := range 2 {
		l, err := holder.TryLock(ctx, "warm", dlock.WithTTL(time.Minute))
		if err != nil {
			t.Fatalf("round %d: TryLock: %v", round, err)
		}
		count.n.Store(0)
		got := lockInBackground(ctx, waiter, "warm", long)
		waitFor(t, 10*time.Second, "waiter queued", func() bool { return rdb.ZCard(ctx, queue).Val() == 1 })
		woken := wd.Wakes("warm")
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("round %d: Unlock: %v", round, err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("round %d: waiter: %v", round, err)
			}
		case <-ctx.Done():
			t.Fatalf("round %d: waiter not woken by the release", round)
		}
		// The announcements of both releases (the holder's, naming the
		// waiter, and the waiter's own) reach the waiter's subscription
		// before the next round: one that came after the next round's
		// attempt was sent would rightly cost that attempt its
		// Queued.Wait, and the count an extra retry.
		waitFor(t, 10*time.Second, "both release announcements delivered", func() bool { return wd.Wakes("warm") >= woken+2 })
		// Lock's attempts and the Unlock. The first round also makes
		// the attempt that follows the new subscription.
		want := int64(3)
		if round == 0 {
			want = 4
		}
		if n := count.n.Load(); n != want {
			t.Errorf("round %d: waiter sent %d scripts for Lock and Unlock, want %d", round, n, want)
		}
	}
}

// TestQueueWarmAttempt: an attempt that joins the queue before its
// caller's watch is in place (driver.Hints.Wait, with the subscription
// lingering) is told it is queued; a release that names it before the
// watch reaches the watch at once; and when no watch follows, the client
// leaves the queue by itself.
func TestQueueWarmAttempt(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	hd, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	wd, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
	warm := func(key string) {
		// A watch, stopped: the subscription lingers.
		_, stop, err := wd.WatchReleases(ctx, key)
		if err != nil {
			t.Fatalf("WatchReleases: %v", err)
		}
		stop()
	}
	hold := driver.Request{Key: "attempt", Token: "holder", TTL: time.Minute}
	try := driver.Request{Key: "attempt", Token: "waiter", TTL: time.Minute, Hints: driver.Hints{Wait: true}}

	// A release between the queued attempt and the watch.
	warm("attempt")
	if res, err := hd.Acquire(ctx, hold); err != nil || !res.Acquired {
		t.Fatalf("holder Acquire = %+v, %v", res, err)
	}
	res, err := wd.Acquire(ctx, try)
	if err != nil || res.Acquired || res.Queued.Wait == 0 {
		t.Fatalf("waiter Acquire = %+v, %v; want queued (Queued.Wait set)", res, err)
	}
	if err := hd.Release(ctx, "attempt", "holder"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // the announcement arrives before any watch
	ch, stop, err := wd.WatchReleases(ctx, "attempt")
	if err != nil {
		t.Fatalf("WatchReleases: %v", err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("a release announced before the watch did not reach it")
	}
	if res, err := wd.Acquire(ctx, try); err != nil || !res.Acquired {
		t.Fatalf("woken waiter Acquire = %+v, %v; want granted", res, err)
	}
	stop()
	if err := wd.Release(ctx, "attempt", "waiter"); err != nil {
		t.Fatalf("Release: %v", err)
	}

	// No watch follows the queued attempt: the client leaves. (Another
	// key: the announcement of the release above may still be on its way
	// to the waiter's subscription, and a wake-up that comes after an
	// attempt was sent rightly keeps Queued.Wait off.)
	hold.Key, try.Key = "attempt2", "attempt2"
	queue, waits := hd.QueueKeys("attempt2")
	warm("attempt2")
	if res, err := hd.Acquire(ctx, hold); err != nil || !res.Acquired {
		t.Fatalf("holder Acquire = %+v, %v", res, err)
	}
	if res, err := wd.Acquire(ctx, try); err != nil || res.Queued.Wait == 0 {
		t.Fatalf("waiter Acquire = %+v, %v; want queued", res, err)
	}
	// Only leaving removes the entry now.
	rdb.PExpire(ctx, queue, time.Minute)
	rdb.PExpire(ctx, waits, time.Minute)
	rdb.ZAdd(ctx, waits, redisZ(float64(time.Now().Add(time.Hour).UnixMilli()), wd.ID()))
	waitFor(t, 10*time.Second, "unwatched waiter out of the queue", func() bool { return rdb.ZCard(ctx, queue).Val() == 0 })
}

// TestQueueArrivalOrder: a client joining the queue goes after every
// entry already there, even one whose place is not behind the server's
// clock (two joins within one millisecond): otherwise a newcomer whose id
// sorts first could overtake the waiter a release has just named, which
// then finds the key kept for the newcomer, who was not woken.
func TestQueueArrivalOrder(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	hd, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	queue, waits := hd.QueueKeys("order")
	holder := dlock.NewClient(hd)
	l, err := holder.TryLock(ctx, "order", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	defer l.Unlock(ctx)

	// A waiter whose place is a minute ahead of the server's clock, with
	// the smallest possible id.
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	ahead := float64(now.Add(time.Minute).UnixMilli())
	rdb.ZAdd(ctx, queue, redisZ(ahead, "0"))
	rdb.ZAdd(ctx, waits, redisZ(ahead, "0"))
	rdb.PExpire(ctx, queue, time.Minute)
	rdb.PExpire(ctx, waits, time.Minute)

	wd, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := lockInBackground(lctx, dlock.NewClient(wd), "order", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
	waitFor(t, 10*time.Second, "waiter queued", func() bool { return rdb.ZCard(ctx, queue).Val() == 2 })
	if rank, err := rdb.ZRank(ctx, queue, wd.ID()).Result(); err != nil || rank != 1 {
		t.Errorf("newcomer's rank = %d, %v; want 1, behind the entry already there", rank, err)
	}
	cancel()
	<-got
}
