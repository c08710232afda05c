package redisdlock_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestSharedHandOff: releases hand permits, readers' shares and writers'
// turns over to waiters on other clients through the release
// announcements, with or without exclusive waiters queued.
func TestSharedHandOff(t *testing.T) {
	srv := testserver.StartRedis(t)
	redistest.RunSharedHandOff(t, redistest.HandOffEnv{
		Open:        func(t *testing.T) *dlock.Client { return openURL(t, srv.URL()) },
		Subs:        func(t *testing.T, key string) int { return numSub(t, srv, key) },
		SharedQueue: true,
	})
}

// TestSharedBehindGoneWaiter: a reader queued behind an exclusive waiter
// ignores the release that names that waiter, and is refused while the
// waiter's entry lives. Here the waiter has gone (its entry lives on for
// two seconds): the reader is let in once the entry has run out, long
// before its 30 s backoff, and not before.
func TestSharedBehindGoneWaiter(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	holder, reader := openURL(t, srv.URL()), openURL(t, srv.URL())
	rdb := rawClient(t, srv.Addr())
	const key = "named"
	l, err := holder.RWMutex(key).TryLock(ctx, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	queue, waits := layout().QueueKeys(key)
	gone := time.Now().Add(2 * time.Second) // no later than the entry's end
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	ms := float64(now.UnixMilli())
	if err := rdb.ZAdd(ctx, queue, redis.Z{Score: ms, Member: "gone"}).Err(); err != nil {
		t.Fatalf("ZADD: %v", err)
	}
	if err := rdb.ZAdd(ctx, waits, redis.Z{Score: ms + 2000, Member: "gone"}).Err(); err != nil {
		t.Fatalf("ZADD: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() {
		r, err := reader.RWMutex(key).RLock(rctx, dlock.WithRetry(dlock.LinearBackoff(30*time.Second)), dlock.WithTTL(time.Minute))
		if err == nil {
			err = r.Unlock(ctx)
		}
		got <- err
	}()
	waitFor(t, 5*time.Second, "reader queued", func() bool {
		n, err := rdb.ZCard(ctx, queue).Result()
		return err == nil && n == 2
	})
	sub := rdb.Subscribe(ctx, layout().Channel(key))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "gone" {
		t.Fatalf("release message = %v, %v; want one naming the first queued client only", msg, err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("reader: %v (not let in once the gone waiter's entry ran out)", err)
		}
		if early := time.Until(gone); early > 0 {
			t.Fatalf("reader granted %v before the entry ahead of it ran out", early)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("reader: no answer")
	}
}

// TestSharedDoesNotOvertakeQueued: a shared attempt is refused while
// another client is first in the key's queue, with that entry's end as the
// holder's TTL, and granted once the entry is gone.
func TestSharedDoesNotOvertakeQueued(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	queue, waits := d.QueueKeys("k")
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatalf("TIME: %v", err)
	}
	ms := float64(now.UnixMilli())
	rdb.ZAdd(ctx, queue, redis.Z{Score: ms, Member: "other"})
	rdb.ZAdd(ctx, waits, redis.Z{Score: ms + 60000, Member: "other"})
	req := driver.SharedRequest{Request: driver.Request{Key: "k", Token: "t1", TTL: time.Minute}}
	res, err := d.AcquireShared(ctx, req)
	if err != nil || res.Acquired || res.HolderTTL <= 0 || res.HolderTTL > time.Minute {
		t.Fatalf("AcquireShared with another client queued = %+v, %v; want refused with the entry's TTL", res, err)
	}
	if err := rdb.Del(ctx, queue, waits).Err(); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	res, err = d.AcquireShared(ctx, req)
	if err != nil || !res.Acquired {
		t.Fatalf("AcquireShared with the queue gone = %+v, %v; want granted", res, err)
	}
}

// clusterSubs returns the subscriber count of key's release channel over
// every node of cluster.
func clusterSubs(t testing.TB, cluster *testserver.RedisCluster, key string) int {
	t.Helper()
	total := 0
	for _, node := range cluster.Nodes {
		out, err := node.Do(testCtx(t, 5*time.Second), "PUBSUB", "NUMSUB", layout().Channel(key))
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB: %v", err)
		}
		parts := strings.Split(out, "\n")
		n, _ := strconv.Atoi(parts[len(parts)-1])
		total += n
	}
	return total
}
