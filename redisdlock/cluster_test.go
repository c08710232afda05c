package redisdlock_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// clusterKeys stress hash-tag handling: tags, empty tags, stray and nested
// braces.
var clusterKeys = []string{
	"job", "{job}", "{job}x", "x{job}", "x{job}y{z}", "{}", "{}{a}", "a{}", "{a}{b}",
	"{", "}", "}{", "a}b", "a}b{c}", "{a", "a{", "{{a}}", "{}}", "}{}", "{a}}", "{{}",
	"{ü}", "ключ{тег}", "🔒", "new\nline{\n}", strings.Repeat("{", 50), strings.Repeat("}", 50),
}

// TestCluster runs against a real three-master Redis Cluster.
func TestCluster(t *testing.T) {
	cluster := testserver.StartRedisCluster(t, 3)

	t.Run("KeySlots", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		node := cluster.Nodes[0]
		for _, prefix := range []string{"", "dlock:", "{app}:", "a}b"} {
			d, _ := newDriver(t, cluster.Nodes[0].Addr(), redisdlock.Options{Prefix: prefix})
			for _, k := range clusterKeys {
				lock, fence, info := d.Keys(k)
				want, err := node.Do(ctx, "CLUSTER", "KEYSLOT", lock)
				if err != nil {
					t.Fatalf("CLUSTER KEYSLOT: %v", err)
				}
				queue, waits := d.QueueKeys(k)
				shares, sinfo, slimit, writers := d.SharedKeys(k)
				for _, c := range []string{fence, info, queue, waits, shares, sinfo, slimit, writers} {
					got, err := node.Do(ctx, "CLUSTER", "KEYSLOT", c)
					if err != nil {
						t.Fatalf("CLUSTER KEYSLOT: %v", err)
					}
					if got != want {
						t.Errorf("prefix %q key %q: companion %q in slot %s, lock %q in slot %s", prefix, k, c, got, lock, want)
					}
				}
			}
		}
	})

	t.Run("SharedHandOff", func(t *testing.T) {
		redistest.RunSharedHandOff(t, redistest.HandOffEnv{
			Open:        func(t *testing.T) *dlock.Client { return openURL(t, cluster.URL()) },
			Subs:        func(t *testing.T, key string) int { return clusterSubs(t, cluster, key) },
			SharedQueue: true,
		})
	})

	t.Run("AcquireManySlots", func(t *testing.T) {
		// Keys of one hash tag go in one script; keys of different slots
		// are refused with ErrUnsupported before anything is sent, and
		// LockMany then takes them one by one.
		ctx := testCtx(t, 30*time.Second)
		addrs := make([]string, len(cluster.Nodes))
		for i, n := range cluster.Nodes {
			addrs[i] = n.Addr()
		}
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		t.Cleanup(func() { _ = rdb.Close() })
		l, err := redisdlock.NewDriver(rdb, redisdlock.Options{Prefix: "many:"})
		if err != nil {
			t.Fatalf("NewDriver: %v", err)
		}
		d := l.(driver.MultiLocker)
		req := func(k string) driver.Request {
			return driver.Request{Key: k, Token: "t-" + k, TTL: 10 * time.Second}
		}
		apart := []driver.Request{req("acct/1"), req("acct/2"), req("acct/3")}
		if _, err := d.AcquireMany(ctx, apart); !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("AcquireMany over several slots = %v, want ErrUnsupported", err)
		}
		for _, r := range apart {
			if in, err := d.Inspect(ctx, r.Key); err != nil || in.Held {
				t.Fatalf("Inspect(%q) after the refused AcquireMany = %+v, %v; want free", r.Key, in, err)
			}
		}
		together := []driver.Request{req("{acct}/1"), req("{acct}/2"), req("{acct}/3")}
		res, err := d.AcquireMany(ctx, together)
		if err != nil || len(res) != 3 || !res[0].Acquired || !res[1].Acquired || !res[2].Acquired {
			t.Fatalf("AcquireMany of one hash tag = %+v, %v; want all three granted", res, err)
		}
		for _, r := range together {
			if err := d.Release(ctx, r.Key, r.Token); err != nil {
				t.Fatalf("Release(%q): %v", r.Key, err)
			}
		}
		c := openURL(t, cluster.URL()+"?prefix=many:")
		set, err := c.LockMany(ctx, []string{"acct/1", "acct/2", "acct/3"})
		if err != nil {
			t.Fatalf("LockMany over several slots: %v", err)
		}
		if err := set.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
	})

	t.Run("LocksInEverySlotRange", func(t *testing.T) {
		ctx := testCtx(t, 60*time.Second)
		a, b := openURL(t, cluster.URL()), openURL(t, cluster.URL()+"?prefix=dlock:")
		for _, c := range []*dlock.Client{a, b} {
			for _, k := range clusterKeys {
				l, err := c.TryLock(ctx, k)
				if err != nil {
					t.Fatalf("TryLock(%q): %v", k, err)
				}
				in, err := c.Inspect(ctx, k)
				if err != nil || !in.Held || in.Fence != l.Fence() {
					t.Fatalf("Inspect(%q) = %+v, %v; want held with fence %d", k, in, err, l.Fence())
				}
				if err := l.Refresh(ctx, 0); err != nil {
					t.Fatalf("Refresh(%q): %v", k, err)
				}
				if err := l.Unlock(ctx); err != nil {
					t.Fatalf("Unlock(%q): %v", k, err)
				}
			}
		}
	})

	t.Run("ListAndForceRelease", func(t *testing.T) {
		// The names with every kind of brace, in every slot range, under
		// prefixes with and without a hash tag: List finds them on every
		// master, in key order; ForceUnlock frees each one.
		ctx := testCtx(t, 60*time.Second)
		want := slices.Clone(clusterKeys)
		slices.Sort(want)
		for _, prefix := range []string{"list:", "{lst}:"} {
			c := openURL(t, cluster.URL()+"?prefix="+url.QueryEscape(prefix))
			locks := map[string]*dlock.Lock{}
			for _, k := range clusterKeys {
				l, err := c.TryLock(ctx, k, dlock.WithTTL(time.Minute), dlock.WithAutoRefresh(false))
				if err != nil {
					t.Fatalf("TryLock(%q): %v", k, err)
				}
				locks[k] = l
			}
			infos, err := c.List(ctx, "")
			if err != nil {
				t.Fatalf("prefix %q: List: %v", prefix, err)
			}
			var got []string
			for _, in := range infos {
				got = append(got, in.Key)
				if l := locks[in.Key]; l == nil || in.Fence != l.Fence() {
					t.Errorf("prefix %q: List has %+v, want the fence of the lock", prefix, in)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("prefix %q: List = %q, want %q", prefix, got, want)
			}
			for _, k := range clusterKeys {
				in, err := c.ForceUnlock(ctx, k)
				if err != nil || !in.Held || in.Fence != locks[k].Fence() {
					t.Errorf("prefix %q: ForceUnlock(%q) = %+v, %v; want the holder with fence %d", prefix, k, in, err, locks[k].Fence())
				}
			}
			if infos, err := c.List(ctx, ""); err != nil || len(infos) != 0 {
				t.Errorf("prefix %q: List after ForceUnlock of every key = %+v, %v; want none", prefix, infos, err)
			}
		}
	})

	t.Run("HandOffAcrossNodes", func(t *testing.T) {
		// Keys on every master: the waiter's one pub/sub connection sits on
		// one node, and releases published on the others reach it.
		ctx := testCtx(t, 60*time.Second)
		holder, waiter := openURL(t, cluster.URL()), openURL(t, cluster.URL())
		seen := map[string]bool{}
		for i := 0; len(seen) < len(cluster.Nodes) && i < 1000; i++ {
			key := "k" + strconv.Itoa(i)
			lock, _, _ := layout().Keys(key)
			s, err := cluster.Nodes[0].Do(ctx, "CLUSTER", "KEYSLOT", lock)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := strconv.Atoi(s)
			owner := n * len(cluster.Nodes) / 16384
			if owner >= len(cluster.Nodes) || seen[fmt.Sprint(owner)] {
				continue
			}
			seen[fmt.Sprint(owner)] = true
			l, err := holder.TryLock(ctx, key, dlock.WithTTL(time.Minute))
			if err != nil {
				t.Fatalf("TryLock(%q): %v", key, err)
			}
			got := lockInBackground(ctx, waiter, key, dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
			waitFor(t, 10*time.Second, "waiter subscribed", func() bool {
				// NUMSUB counts a node's own subscribers; ask them all.
				total := 0
				for _, node := range cluster.Nodes {
					out, err := node.Do(ctx, "PUBSUB", "NUMSUB", layout().Channel(key))
					if err != nil {
						return false
					}
					parts := strings.Split(out, "\n")
					v, _ := strconv.Atoi(parts[len(parts)-1])
					total += v
				}
				return total == 1
			})
			if err := l.Unlock(ctx); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("waiter on %q (slot owner node %d): %v", key, owner, err)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("waiter on %q (slot owner node %d) with an hour's backoff not woken", key, owner)
			}
		}
		if len(seen) != len(cluster.Nodes) {
			t.Fatalf("found keys on %d nodes, want %d", len(seen), len(cluster.Nodes))
		}
	})

	t.Run("Compatibility", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()})
		defer rdb.Close()
		c, err := redisdlock.NewClient(rdb, redisdlock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, key := range []string{"plain", "{tag}plain"} {
			if ok, err := rdb.SetNX(ctx, key, "other", 5*time.Second).Result(); err != nil || !ok {
				t.Fatalf("SET NX %q = %v, %v", key, ok, err)
			}
			if _, err := c.TryLock(ctx, key); err == nil {
				t.Fatalf("TryLock(%q) while a plain SET NX holds it succeeded", key)
			}
			rdb.Del(ctx, key)
			l, err := c.TryLock(ctx, key)
			if err != nil {
				t.Fatalf("TryLock(%q): %v", key, err)
			}
			if ok, err := rdb.SetNX(ctx, key, "other", 5*time.Second).Result(); err != nil || ok {
				t.Fatalf("plain SET NX %q while dlock holds it = %v, %v; want false", key, ok, err)
			}
			_ = l.Unlock(ctx)
		}
	})

	t.Run("Conformance", func(t *testing.T) {
		drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
			return urlHarness(cluster.URL()), nil
		})
	})
}
