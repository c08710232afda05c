package redisdlock_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestSharedLayout checks what shared grants store: a key locked only
// exclusively has none of the shared keys; permits live in the shares
// sorted set (by lease end), the sinfo hash (fence and metadata) and the
// stored limit, all expiring with the last lease; a waiting writer in the
// writers sorted set; and every one of them is gone once the grants are.
func TestSharedLayout(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{Prefix: "app:"})
	c := dlock.NewClient(d)
	t.Cleanup(func() { _ = c.Close() })
	shares, sinfo, slimit, writers := d.SharedKeys("k")
	lock, _, _ := d.Keys("k")
	none := func(when string) {
		t.Helper()
		for _, k := range []string{shares, sinfo, slimit, writers} {
			if n, err := rdb.Exists(ctx, k).Result(); err != nil || n != 0 {
				t.Errorf("%s: EXISTS %q = %d, %v; want 0", when, k, n, err)
			}
		}
	}

	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	none("while locked exclusively")
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	none("after the exclusive lock")

	p, err := c.Semaphore("k", 2).TryAcquire(ctx, dlock.WithTTL(10*time.Second), dlock.WithMetadata("who=p"))
	if err != nil {
		t.Fatalf("TryAcquire: %v", err)
	}
	if n, err := rdb.Exists(ctx, lock).Result(); err != nil || n != 0 {
		t.Errorf("EXISTS lock key with a permit out = %d, %v; want 0 (shared grants live beside it)", n, err)
	}
	score, err := rdb.ZScore(ctx, shares, p.Token()).Result()
	now, terr := rdb.Time(ctx).Result()
	if err != nil || terr != nil {
		t.Fatalf("ZSCORE shares: %v, TIME: %v", err, terr)
	}
	if left := time.Duration(score)*time.Millisecond - time.Duration(now.UnixMilli())*time.Millisecond; left <= 0 || left > 10*time.Second {
		t.Errorf("share's lease ends in %v by the server's clock, want within (0, 10s]", left)
	}
	raw, err := rdb.HGet(ctx, sinfo, p.Token()).Result()
	var in struct{ Fence, Meta string }
	if err != nil || json.Unmarshal([]byte(raw), &in) != nil || in.Fence != strconv.FormatUint(p.Fence(), 10) || in.Meta != "who=p" {
		t.Errorf("HGET sinfo = %q, %v; want fence %d and the metadata", raw, err, p.Fence())
	}
	if got, err := rdb.Get(ctx, slimit).Result(); err != nil || got != "2" {
		t.Errorf("GET slimit = %q, %v; want 2", got, err)
	}
	for _, k := range []string{shares, sinfo, slimit} {
		if pttl, err := rdb.PTTL(ctx, k).Result(); err != nil || pttl <= 0 || pttl > 10*time.Second {
			t.Errorf("PTTL %q = %v, %v; want in (0, 10s]", k, pttl, err)
		}
	}

	res, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "w", TTL: 5 * time.Second, Hints: driver.Hints{Wait: true}})
	if err != nil || res.Acquired || !res.WriterWaiting {
		t.Fatalf("waiting writer's Acquire = %+v, %v; want refused and recorded", res, err)
	}
	if _, err := rdb.ZScore(ctx, writers, "w").Result(); err != nil {
		t.Errorf("ZSCORE writers w: %v", err)
	}
	if pttl, err := rdb.PTTL(ctx, writers).Result(); err != nil || pttl <= 0 || pttl > 5*time.Second {
		t.Errorf("PTTL writers = %v, %v; want in (0, 5s]", pttl, err)
	}
	if err := d.Release(ctx, "k", "w"); err == nil {
		t.Error("Release of a writer record = nil, want ErrNotHeld")
	}
	if err := p.Unlock(ctx); err != nil {
		t.Fatalf("Unlock of the permit: %v", err)
	}
	none("after every grant and record went")
	if in, err := c.Inspect(ctx, "k"); err != nil || in.Held || in.Fence != p.Fence() {
		t.Errorf("Inspect = %+v, %v; want free with the last fence %d", in, err, p.Fence())
	}
}

// TestSharedForeignLock: a plain SET NX lock (another library) on the key
// keeps shared grants out, as a dlock mutex does.
func TestSharedForeignLock(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	c := dlock.NewClient(d)
	t.Cleanup(func() { _ = c.Close() })
	if err := rdb.SetNX(ctx, "res", "other-library", 5*time.Second).Err(); err != nil {
		t.Fatalf("SET NX: %v", err)
	}
	if r, err := c.RWMutex("res").TryRLock(ctx); err == nil {
		_ = r.Unlock(ctx)
		t.Fatal("TryRLock beside another library's lock succeeded")
	}
	h, err := c.Holders(ctx, "res")
	if err != nil || len(h.Holders) != 1 || h.Holders[0].Shared || h.Holders[0].Fence != 0 {
		t.Errorf("Holders = %+v, %v; want the foreign exclusive holder, fence 0", h, err)
	}
}

// TestACLShared: semaphores and RW locks need, beyond the mutex's
// commands (TestACLPrefixOnly), only the ones the documentation lists for
// shared grants.
func TestACLShared(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	_, err := srv.Do(ctx, "ACL", "SETUSER", "locker", "on", ">locker-pw", "resetkeys", "~app:*", "resetchannels", "&app:*",
		"-@all", "+evalsha", "+eval", "+get", "+set", "+pexpire", "+pttl", "+del", "+time", "+publish", "+exists",
		"+zadd", "+zrange", "+zrangebyscore", "+zrem", "+zscore", "+zcount",
		"+subscribe", "+unsubscribe", "+ping", "+hello",
		"+zcard", "+zremrangebyscore", "+hset", "+hget", "+hmget", "+hdel")
	if err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	a := openURL(t, "redis://locker:locker-pw@"+srv.Addr()+"?prefix=app:")
	b := openURL(t, "redis://locker:locker-pw@"+srv.Addr()+"?prefix=app:")
	p, err := a.Semaphore("sem", 1).TryAcquire(ctx)
	if err != nil {
		t.Fatalf("TryAcquire as the restricted user: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		q, err := b.Semaphore("sem", 1).Acquire(ctx)
		if err == nil {
			err = q.Refresh(ctx, 0)
		}
		if err == nil {
			_, err = b.Holders(ctx, "sem")
		}
		if err == nil {
			err = q.Unlock(ctx)
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := p.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("second permit as the restricted user: %v", err)
	}
	r, err := a.RWMutex("rw").TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = b.RWMutex("rw").Lock(wctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("writer's Lock beside a reader = %v, want DeadlineExceeded", err)
	}
	if _, err := a.List(ctx, ""); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		// List needs scan, which the user lacks: proof that the calls
		// above ran as the restricted user.
		t.Errorf("List without scan = %v, want NOPERM", err)
	}
	if _, err := a.ForceUnlock(ctx, "rw"); err != nil {
		t.Fatalf("ForceUnlock of the readers: %v", err)
	}
	if err := r.Unlock(ctx); err == nil {
		t.Error("Unlock of a force-released reader succeeded")
	}
}

// TestSharedAdmin: List and Inspect report a key with shared grants as
// held (the newest grant's fence and metadata, the longest TTL), and
// ForceRelease frees every grant and removes the waiting writers.
func TestSharedAdmin(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	share := func(key, token string, ttl time.Duration) driver.Result {
		t.Helper()
		res, err := d.AcquireShared(ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: token, TTL: ttl, Metadata: token}})
		if err != nil || !res.Acquired {
			t.Fatalf("AcquireShared(%s, %s) = %+v, %v", key, token, res, err)
		}
		return res
	}
	share("r/1", "a", 20*time.Second)
	b := share("r/1", "b", 5*time.Second)
	x, err := d.Acquire(ctx, driver.Request{Key: "r/2", Token: "x", TTL: 5 * time.Second})
	if err != nil || !x.Acquired {
		t.Fatalf("Acquire: %+v, %v", x, err)
	}
	// A name holding "info:" is listed once, under its own name.
	share("r/info:3", "c", 5*time.Second)
	keys, err := d.List(ctx, "r/")
	if err != nil || len(keys) != 3 || keys[0].Key != "r/1" || keys[1].Key != "r/2" || keys[2].Key != "r/info:3" {
		t.Fatalf("List = %+v, %v; want r/1, r/2, r/info:3", keys, err)
	}
	if in := keys[0].Info; !in.Held || in.Fence != b.Fence || in.Metadata != "b" || in.TTL <= 5*time.Second {
		t.Errorf("List's r/1 = %+v, want held, the newest fence %d and metadata, the longest TTL", in, b.Fence)
	}
	if res, err := d.Acquire(ctx, driver.Request{Key: "r/1", Token: "w", TTL: 5 * time.Second, Hints: driver.Hints{Wait: true}}); err != nil || !res.WriterWaiting {
		t.Fatalf("waiting writer's Acquire = %+v, %v", res, err)
	}
	in, err := d.ForceRelease(ctx, "r/1")
	if err != nil || !in.Held || in.Fence != b.Fence {
		t.Fatalf("ForceRelease = %+v, %v; want the shared grants' report", in, err)
	}
	shares, sinfo, slimit, writers := d.SharedKeys("r/1")
	if n, err := rdb.Exists(ctx, shares, sinfo, slimit, writers).Result(); err != nil || n != 0 {
		t.Errorf("after ForceRelease, EXISTS of the shared keys = %d, %v; want 0", n, err)
	}
	if err := d.Refresh(ctx, "r/1", "a", time.Second); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("Refresh of a force-released grant = %v, want ErrNotHeld", err)
	}
	if y := share("r/1", "y", 5*time.Second); y.Fence <= b.Fence {
		t.Errorf("fence after ForceRelease = %d, want more than %d", y.Fence, b.Fence)
	}
}
