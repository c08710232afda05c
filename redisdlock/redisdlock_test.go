package redisdlock_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

func TestConformance(t *testing.T) {
	srv := testserver.StartRedis(t)
	tests := []struct {
		name string
		h    drivertest.Harness
	}{
		{"URL", urlHarness(srv.URL())},
		{"NewDriver", clientHarness{addr: srv.Addr(), t: t}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return tc.h, nil
			})
		})
	}
}

// TestLayout checks what the driver stores: the lock key holds exactly the
// token, the info key the fence and metadata, and release deletes both but
// keeps the counter.
func TestLayout(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	c := dlock.NewClient(d)
	t.Cleanup(func() { _ = c.Close() })

	for _, name := range []string{"job", "{tag}job", "a}b", "{}", "ключ"} {
		l, err := c.TryLock(ctx, name, dlock.WithTTL(10*time.Second), dlock.WithMetadata("who=test"))
		if err != nil {
			t.Fatalf("TryLock(%q): %v", name, err)
		}
		lock, fence, info := d.Keys(name)
		if want := name; lock != want {
			t.Errorf("lock key = %q, want %q", lock, want)
		}
		if got, err := rdb.Get(ctx, lock).Result(); err != nil || got != l.Token() {
			t.Errorf("GET %q = %q, %v; want the token %q", lock, got, err, l.Token())
		}
		if pttl, err := rdb.PTTL(ctx, lock).Result(); err != nil || pttl <= 0 || pttl > 10*time.Second {
			t.Errorf("PTTL %q = %v, %v; want in (0, 10s]", lock, pttl, err)
		}
		raw, err := rdb.Get(ctx, info).Result()
		if err != nil {
			t.Fatalf("GET info %q: %v", info, err)
		}
		var in struct{ Fence, Token, Meta string }
		if err := json.Unmarshal([]byte(raw), &in); err != nil {
			t.Fatalf("info %q: %v", raw, err)
		}
		if in.Fence != strconv.FormatUint(l.Fence(), 10) || in.Token != l.Token() || in.Meta != "who=test" {
			t.Errorf("info = %+v, want fence %d, the token, meta who=test", in, l.Fence())
		}
		if got, err := rdb.Get(ctx, fence).Result(); err != nil || got != strconv.FormatUint(l.Fence(), 10) {
			t.Errorf("counter = %q, %v; want %d", got, err, l.Fence())
		}
		if ttl, err := rdb.PTTL(ctx, fence).Result(); err != nil || ttl < 29*24*time.Hour {
			t.Errorf("counter PTTL = %v, %v; want about 30 days", ttl, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
		if n, err := rdb.Exists(ctx, lock, info).Result(); err != nil || n != 0 {
			t.Errorf("after Unlock, EXISTS lock info = %d, %v; want 0", n, err)
		}
		in2, err := c.Inspect(ctx, name)
		if err != nil || in2.Held || in2.Fence != l.Fence() {
			t.Errorf("Inspect after Unlock = %+v, %v; want free with the last fence %d", in2, err, l.Fence())
		}
	}
}

// TestFenceAfterCounterLoss: fences keep increasing when the counter is
// deleted or the whole database flushed (they follow the server's clock).
func TestFenceAfterCounterLoss(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	c := dlock.NewClient(d)
	t.Cleanup(func() { _ = c.Close() })
	_, fenceKey, _ := d.Keys("k")
	losses := []struct {
		name string
		lose func() error
	}{
		{"none", func() error { return nil }},
		{"DEL counter", func() error { return rdb.Del(ctx, fenceKey).Err() }},
		{"FLUSHALL", func() error { return rdb.FlushAll(ctx).Err() }},
		{"counter set low", func() error { return rdb.Set(ctx, fenceKey, "1", 0).Err() }},
	}
	var last uint64
	for _, loss := range losses {
		l, err := c.TryLock(ctx, "k")
		if err != nil {
			t.Fatalf("%s: TryLock: %v", loss.name, err)
		}
		if l.Fence() <= last {
			t.Errorf("after %s: fence %d, want > %d", loss.name, l.Fence(), last)
		}
		last = l.Fence()
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
		if err := loss.lose(); err != nil {
			t.Fatalf("%s: %v", loss.name, err)
		}
	}
}

// TestCompatibility: with the default (empty) prefix a plain SET NX PX
// (redsync, bsm/redislock, hand-written code) and dlock exclude each other.
func TestCompatibility(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	rdb := rawClient(t, srv.Addr())
	plainURL := openURL(t, srv.URL())
	emptyPrefixURL := openURL(t, srv.URL()+"/?prefix=")
	d, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
	byClient := dlock.NewClient(d)
	t.Cleanup(func() { _ = byClient.Close() })

	for _, tc := range []struct {
		name string
		c    *dlock.Client
	}{{"URL", plainURL}, {"URL prefix=", emptyPrefixURL}, {"Options{}", byClient}} {
		t.Run(tc.name, func(t *testing.T) {
			key := "job-" + strings.ReplaceAll(tc.name, " ", "-")
			// A plain SET NX PX blocks dlock.
			ok, err := rdb.SetNX(ctx, key, "plain-owner", 5*time.Second).Result()
			if err != nil || !ok {
				t.Fatalf("plain SET NX = %v, %v", ok, err)
			}
			if _, err := tc.c.TryLock(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
				t.Fatalf("dlock TryLock while a plain SET NX holds the key = %v, want ErrNotAcquired", err)
			}
			in, err := tc.c.Inspect(ctx, key)
			if err != nil || !in.Held || in.Fence != 0 || in.TTL <= 0 || in.TTL > 5*time.Second {
				t.Fatalf("Inspect of a plain lock = %+v, %v; want held, fence 0, TTL in (0, 5s]", in, err)
			}
			// The plain owner releases with compare-and-delete; dlock gets it.
			const cad = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`
			if n, err := rdb.Eval(ctx, cad, []string{key}, "plain-owner").Int(); err != nil || n != 1 {
				t.Fatalf("plain compare-and-delete = %d, %v", n, err)
			}
			l, err := tc.c.TryLock(ctx, key)
			if err != nil {
				t.Fatalf("dlock TryLock after the plain release: %v", err)
			}
			// dlock's lock blocks a plain SET NX, and holds exactly the token.
			if ok, err := rdb.SetNX(ctx, key, "plain-owner", 5*time.Second).Result(); err != nil || ok {
				t.Fatalf("plain SET NX while dlock holds the key = %v, %v; want false", ok, err)
			}
			if v, err := rdb.Get(ctx, key).Result(); err != nil || v != l.Token() {
				t.Fatalf("GET %q = %q, %v; want the token %q", key, v, err, l.Token())
			}
			// A plain compare-and-delete with dlock's token releases it too.
			if n, err := rdb.Eval(ctx, cad, []string{key}, l.Token()).Int(); err != nil || n != 1 {
				t.Fatalf("plain compare-and-delete of dlock's lock = %d, %v", n, err)
			}
			if err := l.Unlock(ctx); !errors.Is(err, dlock.ErrNotHeld) {
				t.Fatalf("Unlock after a plain release = %v, want ErrNotHeld", err)
			}
			// A waiter behind a plain lock (which publishes nothing) is
			// bounded by the holder's TTL, not by its backoff.
			if ok, err := rdb.SetNX(ctx, key, "plain-owner", 300*time.Millisecond).Result(); err != nil || !ok {
				t.Fatalf("plain SET NX = %v, %v", ok, err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			l, err = tc.c.Lock(wctx, key, dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
			if err != nil {
				t.Fatalf("Lock behind a plain lock with a 300ms TTL: %v", err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
		})
	}
}

// TestTLS opens rediss:// with the server's CA, and fails cleanly without it.
func TestTLS(t *testing.T) {
	srv := testserver.StartRedis(t, testserver.RedisTLS(), testserver.RedisPassword("s3cret-tls"))
	ctx := testCtx(t, 30*time.Second)
	c := openURL(t, srv.URL()+"/?tls_ca_file="+srv.CAFile)
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock over TLS: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock over TLS: %v", err)
	}
	bad := openURL(t, srv.URL())
	_, err = bad.TryLock(ctx, "k")
	if !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), srv.Addr()) || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("TryLock over TLS without the CA = %v; want ErrUnavailable naming %s without the password", err, srv.Addr())
	}
	skip := openURL(t, srv.URL()+"/?tls_insecure_skip_verify=true")
	l, err = skip.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock with tls_insecure_skip_verify: %v", err)
	}
	_ = l.Unlock(ctx)
}

// TestPasswordAndDB: credentials and the database number from the URL are
// used; a wrong password fails without showing it.
func TestPasswordAndDB(t *testing.T) {
	srv := testserver.StartRedis(t, testserver.RedisPassword("right-pw"))
	ctx := testCtx(t, 30*time.Second)
	c := openURL(t, "redis://:right-pw@"+srv.Addr()+"/3?prefix=p:")
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: "right-pw", DB: 3})
	defer rdb.Close()
	if v, err := rdb.Get(ctx, "p:k").Result(); err != nil || v != l.Token() {
		t.Fatalf("GET p:k in DB 3 = %q, %v; want the token", v, err)
	}
	_ = l.Unlock(ctx)

	wrong := openURL(t, "redis://:wrong-pw@"+srv.Addr())
	_, err = wrong.TryLock(ctx, "k")
	if err == nil || strings.Contains(err.Error(), "wrong-pw") || !strings.Contains(err.Error(), srv.Addr()) {
		t.Fatalf("TryLock with a wrong password = %v; want an error naming %s, not the password", err, srv.Addr())
	}
}

// TestSentinel finds the master through a Sentinel.
func TestSentinel(t *testing.T) {
	master := testserver.StartRedis(t, testserver.RedisPassword("master-pw"))
	sentinel := testserver.StartRedisSentinel(t, master, "mymaster")
	ctx := testCtx(t, 30*time.Second)
	c := openURL(t, "redis+sentinel://:master-pw@"+sentinel.Addr()+"/mymaster/2")
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock through Sentinel: %v", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: master.Addr(), Password: "master-pw", DB: 2})
	defer rdb.Close()
	if v, err := rdb.Get(ctx, "k").Result(); err != nil || v != l.Token() {
		t.Fatalf("GET k on the master's DB 2 = %q, %v; want the token", v, err)
	}
	if infos, err := c.List(ctx, ""); err != nil || len(infos) != 1 || infos[0].Key != "k" || infos[0].Fence != l.Fence() {
		t.Fatalf("List through Sentinel = %+v, %v; want k with fence %d", infos, err, l.Fence())
	}
	if in, err := c.ForceUnlock(ctx, "k"); err != nil || !in.Held || in.Fence != l.Fence() {
		t.Fatalf("ForceUnlock through Sentinel = %+v, %v; want the holder with fence %d", in, err, l.Fence())
	}
	if err := l.Unlock(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Unlock after ForceUnlock = %v, want ErrNotHeld", err)
	}
}

// TestACLPrefixOnly: a Redis ACL user allowed only the prefix's keys and
// channels, and only the commands the documentation lists, can use dlock.
func TestACLPrefixOnly(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	_, err := srv.Do(ctx, "ACL", "SETUSER", "locker", "on", ">locker-pw", "resetkeys", "~app:*", "resetchannels", "&app:*",
		"-@all", "+evalsha", "+eval", "+get", "+set", "+pexpire", "+pttl", "+del", "+time", "+publish", "+exists",
		"+zadd", "+zrange", "+zrangebyscore", "+zrem", "+zscore", "+zcount",
		"+subscribe", "+unsubscribe", "+ping", "+hello")
	if err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	holder := openURL(t, "redis://locker:locker-pw@"+srv.Addr()+"?prefix=app:")
	waiter := openURL(t, "redis://locker:locker-pw@"+srv.Addr()+"?prefix=app:")
	for _, name := range []string{"job", "{tag}x", "a}b"} {
		l, err := holder.TryLock(ctx, name, dlock.WithTTL(time.Minute))
		if err != nil {
			t.Fatalf("TryLock(%q) as the restricted user: %v", name, err)
		}
		got := make(chan error, 1)
		go func() {
			wl, err := waiter.Lock(ctx, name, dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
			if err == nil {
				_, err = waiter.Inspect(ctx, name)
			}
			if err == nil {
				err = wl.Refresh(ctx, 0)
			}
			if err == nil {
				err = wl.Unlock(ctx)
			}
			got <- err
		}()
		time.Sleep(50 * time.Millisecond)
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock(%q): %v", name, err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("waiter on %q as the restricted user: %v", name, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("waiter on %q not woken", name)
		}
	}
	// Outside the prefix the user is refused, so the test above proves
	// every key and channel dlock touched was under it.
	other := openURL(t, "redis://locker:locker-pw@"+srv.Addr()+"?prefix=other:")
	if _, err := other.TryLock(ctx, "job"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("TryLock outside the allowed prefix = %v, want a NOPERM error", err)
	}
}
