package redisdlock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestListOnlyLocks: List reports dlock's held locks of its own prefix and
// nothing else of a database shared with an application, other libraries
// and other prefixes, whatever glob characters the prefixes hold, in key
// order across many small batches.
func TestListOnlyLocks(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	const prefix = `p*?[x]\:`
	rdb := rawClient(t, srv.Addr())
	d, err := redisengine.New(rdb, redisengine.Config{Prefix: prefix, ListBatch: 7})
	if err != nil {
		t.Fatalf("redisengine.New: %v", err)
	}
	c := dlock.NewClient(d)
	t.Cleanup(func() { _ = c.Close() })
	// Another prefix that the first one's characters would match as a
	// pattern, and the bare namespace.
	other, _ := newDriver(t, srv.Addr(), redisdlock.Options{Prefix: "pXYxZ:"})
	oc := dlock.NewClient(other)
	t.Cleanup(func() { _ = oc.Close() })
	bare, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
	bc := dlock.NewClient(bare)
	t.Cleanup(func() { _ = bc.Close() })

	var want []string
	for i := range 40 {
		want = append(want, fmt.Sprintf("k/%02d", i))
	}
	// Names that contain the info kind, hash tags, braces and glob
	// characters.
	want = append(want, "x}info:y", "{t}a", "a{b}c", "}", "*", `\`, "[a]")
	slices.Sort(want)
	locks := map[string]*dlock.Lock{}
	for _, name := range want {
		l, err := c.TryLock(ctx, name, dlock.WithTTL(time.Minute), dlock.WithMetadata("m="+name))
		if err != nil {
			t.Fatalf("TryLock(%q): %v", name, err)
		}
		locks[name] = l
		if _, err := oc.TryLock(ctx, name, dlock.WithTTL(time.Minute)); err != nil {
			t.Fatalf("TryLock(%q) with another prefix: %v", name, err)
		}
		if _, err := bc.TryLock(ctx, prefix+name+"!", dlock.WithTTL(time.Minute)); err != nil {
			t.Fatalf("TryLock(%q) without a prefix: %v", prefix+name+"!", err)
		}
	}
	// What must not be listed: released and expired keys (their fence
	// counters stay), a lock of another library, an application's keys,
	// an info key without its lock, a lock whose value another client
	// replaced, and a forged info key of the wrong hash tag.
	l, err := c.TryLock(ctx, "released")
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if _, err := c.TryLock(ctx, "expired", dlock.WithTTL(20*time.Millisecond), dlock.WithAutoRefresh(false)); err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	for _, name := range []string{"deleted", "replaced"} {
		if _, err := c.TryLock(ctx, name, dlock.WithTTL(time.Minute)); err != nil {
			t.Fatalf("TryLock: %v", err)
		}
	}
	lockKey, _, _ := d.Keys("deleted")
	if err := rdb.Del(ctx, lockKey).Err(); err != nil {
		t.Fatal(err)
	}
	lockKey, _, _ = d.Keys("replaced")
	if err := rdb.Set(ctx, lockKey, "someone-else", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, prefix+"foreign", "token", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, prefix+"app", "data", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, prefix+"hash", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	_, err = c.TryLock(ctx, "forged", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	_, _, info := d.Keys("forged")
	if err := rdb.Set(ctx, prefix+"\xff{nottag}info:forged", rdb.Get(ctx, info).Val(), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, info).Err(); err != nil {
		t.Fatal(err)
	}
	// A waiter in the queue of want[0].
	wc := dlock.NewClient(mustDriver(t, srv.Addr(), prefix))
	t.Cleanup(func() { _ = wc.Close() })
	wctx, wcancel := context.WithCancel(ctx)
	waited := lockInBackground(wctx, wc, want[0])
	defer func() {
		wcancel()
		if err := <-waited; !errors.Is(err, context.Canceled) {
			t.Errorf("waiter: %v, want context.Canceled", err)
		}
	}()
	waitFor(t, 10*time.Second, "a waiter queued", func() bool {
		in, err := c.Inspect(ctx, want[0])
		return err == nil && in.Waiters == 1
	})
	time.Sleep(30 * time.Millisecond) // let "expired" expire

	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", want},
		{"k/", want[slices.Index(want, "k/00") : slices.Index(want, "k/39")+1]},
		{"x", []string{"x}info:y"}},
		{"y", nil},
		{"*", []string{"*"}},
		{"[", []string{"[a]"}},
		{`\`, []string{`\`}},
		{"{", []string{"{t}a"}},
		{"released", nil},
		{"expired", nil},
		{"deleted", nil},
		{"replaced", nil},
		{"forged", nil},
		{"foreign", nil},
		{"app", nil},
		{"hash", nil},
	} {
		got, err := d.ListHolders(ctx, tc.prefix)
		if err != nil {
			t.Fatalf("ListHolders(%q): %v", tc.prefix, err)
		}
		var names []string
		for _, h := range got {
			names = append(names, h.Key)
			l := locks[h.Key]
			if l == nil {
				continue
			}
			in, err := d.Inspect(ctx, h.Key)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			in.TTL, h.TTL = 0, 0
			if h.Token != l.Token() || h.Info != in || h.Fence != l.Fence() || h.Metadata != "m="+h.Key {
				t.Errorf("ListHolders(%q): %q = %+v, token %q; want Inspect's %+v, token %q", tc.prefix, h.Key, h.Info, h.Token, in, l.Token())
			}
		}
		if !slices.Equal(names, tc.want) {
			t.Errorf("ListHolders(%q) = %q, want %q", tc.prefix, names, tc.want)
		}
	}
	if got, err := d.List(ctx, want[0]); err != nil || len(got) != 1 || got[0].Waiters != 1 {
		t.Errorf("List(%q) = %+v, %v; want one key with 1 waiter", want[0], got, err)
	}
}

func mustDriver(t *testing.T, addr, prefix string) *redisengine.Engine {
	t.Helper()
	d, _ := newDriver(t, addr, redisdlock.Options{Prefix: prefix})
	return d
}

// TestForceRelease: the forced release frees the holder in one script,
// keeps the fence counter, hands the key to the first queued waiter as
// Release does, and leaves the freed holder's Refresh, RefreshBatch and
// Release with ErrNotHeld; a key of another library is freed, an
// application's key is left alone.
func TestForceRelease(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	d, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	c := dlock.NewClient(d)
	t.Cleanup(func() { _ = c.Close() })

	t.Run("Holder", func(t *testing.T) {
		const key = "held"
		l, err := c.TryLock(ctx, key, dlock.WithTTL(time.Minute), dlock.WithMetadata("owner"), dlock.WithAutoRefresh(false))
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		// A queued waiter, and a subscriber who sees the announcement.
		wd := mustDriver(t, srv.Addr(), "")
		wc := dlock.NewClient(wd)
		t.Cleanup(func() { _ = wc.Close() })
		queue, _ := d.QueueKeys(key)
		got := make(chan error, 1)
		go func() {
			wl, err := wc.Lock(ctx, key, dlock.WithTTL(time.Minute))
			if err == nil {
				err = wl.Unlock(ctx)
			}
			got <- err
		}()
		waitFor(t, 10*time.Second, "the waiter queued", func() bool {
			return slices.Equal(rdb.ZRange(ctx, queue, 0, -1).Val(), []string{wd.ID()})
		})
		sub := rdb.Subscribe(ctx, d.Channel(key))
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatalf("SUBSCRIBE: %v", err)
		}

		in, err := d.ForceRelease(ctx, key)
		if err != nil {
			t.Fatalf("ForceRelease: %v", err)
		}
		if !in.Held || in.Fence != l.Fence() || in.Metadata != "owner" || in.Waiters != 1 || in.TTL <= 0 || in.TTL > time.Minute {
			t.Errorf("ForceRelease = %+v; want held, fence %d, metadata owner, 1 waiter, TTL in (0, 1m]", in, l.Fence())
		}
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("release message: %v", err)
		}
		if msg.Payload != wd.ID() {
			t.Errorf("release message names %q, want the queued waiter %q", msg.Payload, wd.ID())
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("waiter: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("waiter not granted 20 s after the forced release")
		}
		if err := d.Refresh(ctx, key, l.Token(), time.Minute); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("freed holder's Refresh = %v, want ErrNotHeld", err)
		}
		errs := d.RefreshBatch(ctx, []driver.RefreshRequest{{Key: key, Token: l.Token(), TTL: time.Minute}})
		if !errors.Is(errs[0], driver.ErrNotHeld) {
			t.Errorf("freed holder's RefreshBatch = %v, want ErrNotHeld", errs[0])
		}
		if err := d.Release(ctx, key, l.Token()); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("freed holder's Release = %v, want ErrNotHeld", err)
		}
		in, err = d.ForceRelease(ctx, key)
		if err != nil || in.Held || in.Fence <= l.Fence() {
			t.Errorf("ForceRelease of the free key = %+v, %v; want not held with the last fence, above %d", in, err, l.Fence())
		}
	})

	t.Run("KeepsFence", func(t *testing.T) {
		l, err := c.TryLock(ctx, "fenced", dlock.WithTTL(time.Minute), dlock.WithAutoRefresh(false))
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		if _, err := d.ForceRelease(ctx, "fenced"); err != nil {
			t.Fatalf("ForceRelease: %v", err)
		}
		lock, fence, info := d.Keys("fenced")
		if v := rdb.Get(ctx, fence).Val(); v != strconv.FormatUint(l.Fence(), 10) {
			t.Errorf("fence counter after the forced release = %q, want %d", v, l.Fence())
		}
		if n := rdb.Exists(ctx, lock, info).Val(); n != 0 {
			t.Errorf("lock or info key left after the forced release")
		}
	})

	t.Run("OtherLibrary", func(t *testing.T) {
		if err := rdb.Set(ctx, "foreign", "their-token", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		// The quorum drivers' step frees only the holder it names.
		if in, err := d.ForceReleaseHolder(ctx, "foreign", "not-theirs"); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("ForceReleaseHolder with another token = %+v, %v; want ErrNotHeld", in, err)
		}
		if n := rdb.Exists(ctx, "foreign").Val(); n != 1 {
			t.Fatalf("ForceReleaseHolder with another token freed the lock")
		}
		in, err := d.ForceReleaseHolder(ctx, "foreign", "their-token")
		if err != nil || !in.Held || in.Fence != 0 || in.TTL <= 0 {
			t.Errorf("ForceReleaseHolder of a SET NX PX lock = %+v, %v; want held with fence 0 and a TTL", in, err)
		}
		if err := rdb.Set(ctx, "foreign", "their-token", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		in, err = d.ForceRelease(ctx, "foreign")
		if err != nil || !in.Held || in.Fence != 0 || in.TTL <= 0 {
			t.Errorf("ForceRelease of a SET NX PX lock = %+v, %v; want held with fence 0 and a TTL", in, err)
		}
		if n := rdb.Exists(ctx, "foreign").Val(); n != 0 {
			t.Errorf("the other library's lock is still there")
		}
	})

	t.Run("NotALock", func(t *testing.T) {
		if err := rdb.Set(ctx, "config", "data", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.HSet(ctx, "hash", "f", "v").Err(); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"config", "hash"} {
			if in, err := d.ForceRelease(ctx, key); !errors.Is(err, dlock.ErrInvalidKey) {
				t.Errorf("ForceRelease(%q) = %+v, %v; want ErrInvalidKey", key, in, err)
			}
			if n := rdb.Exists(ctx, key).Val(); n != 1 {
				t.Errorf("ForceRelease(%q) deleted an application's key", key)
			}
		}
	})
}

// TestAdminACL: a Redis ACL user allowed only the prefix's keys and
// channels and the commands the documentation lists (SCAN added for List)
// can list and force-release.
func TestAdminACL(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	_, err := srv.Do(ctx, "ACL", "SETUSER", "locker", "on", ">locker-pw", "resetkeys", "~app:*", "resetchannels", "&app:*",
		"-@all", "+evalsha", "+eval", "+get", "+set", "+pexpire", "+pttl", "+del", "+time", "+publish", "+exists",
		"+zadd", "+zrange", "+zrangebyscore", "+zrem", "+zscore", "+zcount",
		"+subscribe", "+unsubscribe", "+ping", "+hello", "+scan")
	if err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	c := openURL(t, "redis://locker:locker-pw@"+srv.Addr()+"?prefix=app:")
	l, err := c.TryLock(ctx, "job", dlock.WithTTL(time.Minute), dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	infos, err := c.List(ctx, "")
	if err != nil || len(infos) != 1 || infos[0].Key != "job" || infos[0].Fence != l.Fence() {
		t.Fatalf("List as the restricted user = %+v, %v; want job with fence %d", infos, err, l.Fence())
	}
	in, err := c.ForceUnlock(ctx, "job")
	if err != nil || !in.Held || in.Fence != l.Fence() {
		t.Fatalf("ForceUnlock as the restricted user = %+v, %v; want the holder with fence %d", in, err, l.Fence())
	}
}
