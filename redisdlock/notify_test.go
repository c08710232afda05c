package redisdlock_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/redisengine"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestHandOffNotified: a waiter whose backoff is an hour gets the key soon
// after the release, so the wake-up is the release message, not a poll.
func TestHandOffNotified(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	holder, waiter := openURL(t, srv.URL()), openURL(t, srv.URL())
	for i := 0; i < 3; i++ {
		l, err := holder.TryLock(ctx, "k", dlock.WithTTL(time.Minute))
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		got := make(chan error, 1)
		var handedAt time.Time
		go func() {
			wl, err := waiter.Lock(ctx, "k", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
			if err == nil {
				handedAt = time.Now()
				err = wl.Unlock(ctx)
			}
			got <- err
		}()
		waitFor(t, 10*time.Second, "waiter subscribed", func() bool { return numSub(t, srv, "k") == 1 })
		released := time.Now()
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("waiter: %v", err)
			}
			t.Logf("hand-off %d: %v after Unlock began", i, handedAt.Sub(released))
		case <-time.After(20 * time.Second):
			t.Fatal("waiter with an hour's backoff not woken by the release")
		}
	}
}

// numSub returns the subscriber count of key's release channel (default
// prefix).
func numSub(t testing.TB, srv *testserver.Redis, key string) int {
	t.Helper()
	out, err := srv.Do(testCtx(t, 5*time.Second), "PUBSUB", "NUMSUB", layout().Channel(key))
	if err != nil {
		t.Fatalf("PUBSUB NUMSUB: %v", err)
	}
	parts := strings.Split(out, "\n")
	n, _ := strconv.Atoi(parts[len(parts)-1])
	return n
}

// layout is a driver with the default prefix that never connects, for its
// key and channel names.
var layout = sync.OnceValue(func() *redisengine.Engine {
	d, err := redisengine.New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), redisengine.Config{})
	if err != nil {
		panic(err)
	}
	return d
})

// TestOneSubscriptionPerClient: many waiters on many keys share one pub/sub
// connection, and each is woken when its key is released.
func TestOneSubscriptionPerClient(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	holder, waiters := openURL(t, srv.URL()), openURL(t, srv.URL())
	const keys, perKey = 5, 4
	var held []*dlock.Lock
	for k := 0; k < keys; k++ {
		l, err := holder.TryLock(ctx, fmt.Sprintf("k%d", k), dlock.WithTTL(time.Minute))
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		held = append(held, l)
	}
	var wg sync.WaitGroup
	errs := make(chan error, keys*perKey)
	for k := 0; k < keys; k++ {
		for i := 0; i < perKey; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := waiters.Lock(ctx, fmt.Sprintf("k%d", k), dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
				if err != nil {
					errs <- err
					return
				}
				time.Sleep(time.Millisecond)
				errs <- l.Unlock(ctx)
			}()
		}
	}
	waitFor(t, 10*time.Second, "every key's channel subscribed", func() bool {
		for k := 0; k < keys; k++ {
			if numSub(t, srv, fmt.Sprintf("k%d", k)) != 1 {
				return false
			}
		}
		return true
	})
	if n := pubsubClients(t, srv); n != 1 {
		t.Errorf("%d pub/sub connections for %d waiters on one client, want 1", n, keys*perKey)
	}
	for _, l := range held {
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("waiters with an hour's backoff not all granted after the releases")
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestWatchSurvivesReconnect: after the pub/sub connection is killed, the
// driver subscribes again and a release still wakes the waiter.
func TestWatchSurvivesReconnect(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	holder, waiter := openURL(t, srv.URL()), openURL(t, srv.URL())
	l, err := holder.TryLock(ctx, "k", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	got := lockInBackground(ctx, waiter, "k", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
	waitFor(t, 10*time.Second, "waiter subscribed", func() bool { return numSub(t, srv, "k") == 1 })
	before := pubsubIDs(t, srv)
	if _, err := srv.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
		t.Fatalf("CLIENT KILL: %v", err)
	}
	waitFor(t, 20*time.Second, "waiter subscribed again", func() bool {
		ids := pubsubIDs(t, srv)
		return len(ids) == 1 && ids[0] != before[0] && numSub(t, srv, "k") == 1
	})
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiter: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("waiter not woken by a release after the reconnect")
	}
}

// TestLingerThenUnsubscribe: a channel stays subscribed a little after its
// last waiter leaves, then is dropped.
func TestLingerThenUnsubscribe(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	holder, waiter := openURL(t, srv.URL()), openURL(t, srv.URL())
	l, err := holder.TryLock(ctx, "k", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = waiter.Lock(wctx, "k")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock = %v, want DeadlineExceeded", err)
	}
	if n := numSub(t, srv, "k"); n != 1 {
		t.Fatalf("right after the waiter left: %d subscribers, want 1 (lingering)", n)
	}
	waitFor(t, 15*time.Second, "channel unsubscribed", func() bool { return numSub(t, srv, "k") == 0 })
	_ = l.Unlock(ctx)
}
