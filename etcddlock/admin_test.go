package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// keysOf returns the keys of infos, in order.
func keysOf(infos []dlock.Info) []string {
	var keys []string
	for _, in := range infos {
		keys = append(keys, in.Key)
	}
	return keys
}

// TestListNamespace: List returns exactly the held keys of its own prefix,
// in the order of the keys (not of their escaped etcd keys), each as Inspect
// reports it, with one lease TTL read per distinct lease; other keys under
// the prefix, keys escapeKey cannot produce and other prefixes are left out.
func TestListNamespace(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 60*time.Second)
	url := "etcd://" + srv.Addr()
	holder, waiter, other := openClient(t, url), openClient(t, url), openClient(t, url+"?prefix=/other/")
	lister, counter := countedClient(t, srv)

	// Bytewise: "$" < "%" < "&" < "/"; escaped, "/" is "%2F", which
	// sorts before "&".
	keys := []string{"a/", "a&", "a%", "a$", "a/%2F", "ü", "z"}
	locks := map[string]*dlock.Lock{}
	for _, k := range keys {
		l, err := holder.TryLock(ctx, k, dlock.WithTTL(10*time.Second), dlock.WithMetadata("m="+k))
		if err != nil {
			t.Fatalf("TryLock(%q): %v", k, err)
		}
		locks[k] = l
	}
	// One key without auto-refresh: a lease of its own.
	if _, err := holder.TryLock(ctx, "own", dlock.WithTTL(10*time.Second), dlock.WithAutoRefresh(false)); err != nil {
		t.Fatal(err)
	}
	keys = append(keys, "own")
	if _, err := other.TryLock(ctx, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	// Keys of the etcd key space that are no dlock queue.
	for _, k := range []string{"/dlock/loose", "/dlock/bad%zz/1", "/dlock/lower%2f/1", "/dlockx/a/1", "/dlock"} {
		if _, err := raw.Put(ctx, k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	// A waiter queued behind "a&".
	wctx, wcancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() {
		_, err := waiter.Lock(wctx, "a&")
		waited <- err
	}()
	t.Cleanup(func() {
		wcancel()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			t.Errorf("waiter did not return 10 s after its cancel")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		in, err := lister.Inspect(ctx, "a&")
		if err != nil {
			t.Fatal(err)
		}
		if in.Waiters == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Inspect(a&) = %+v 10 s after the waiter started, want 1 waiter", in)
		}
		time.Sleep(20 * time.Millisecond)
	}

	_, _, before := counter.snapshot()
	got, err := lister.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	_, _, after := counter.snapshot()
	want := slices.Sorted(slices.Values(keys))
	if !slices.Equal(keysOf(got), want) {
		t.Fatalf("List(\"\") = %q, want %q", keysOf(got), want)
	}
	// One shared lease (the auto-refreshed locks), one of its own.
	if n := diff(after, before)["LeaseTimeToLive"]; n != 2 {
		t.Errorf("List read %d lease TTLs, want 2 (one per distinct lease)", n)
	}
	for _, in := range got {
		ins, err := lister.Inspect(ctx, in.Key)
		if err != nil {
			t.Fatal(err)
		}
		if in.Held != ins.Held || in.Fence != ins.Fence || in.Metadata != ins.Metadata || in.Waiters != ins.Waiters ||
			in.TTL <= 0 || in.TTL > 10*time.Second {
			t.Errorf("List has %+v, Inspect %+v; want the same, with 0 < TTL <= 10s", in, ins)
		}
		if l := locks[in.Key]; l != nil && in.Fence != l.Fence() {
			t.Errorf("List: %q has fence %d, want %d", in.Key, in.Fence, l.Fence())
		}
	}

	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"a", []string{"a$", "a%", "a&", "a/", "a/%2F"}},
		{"a/", []string{"a/", "a/%2F"}},
		{"a/%", []string{"a/%2F"}},
		{"a%", []string{"a%"}},
		{"ü", []string{"ü"}},
		{"loose", nil},
		{"bad", nil},
	} {
		got, err := lister.List(ctx, tc.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keysOf(got), tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, keysOf(got), tc.want)
		}
	}
	if got, err := other.List(ctx, ""); err != nil || !slices.Equal(keysOf(got), []string{"elsewhere"}) {
		t.Errorf("List on prefix /other/ = %q, %v; want [elsewhere]", keysOf(got), err)
	}
}

// TestListRawKeys: with an empty prefix (the layout of concurrency.Mutex)
// List finds both dlock's and the Mutex's locks, keeps to entries that
// look like the Mutex's (a lease ID on a key with a lease), and reports a
// key as Inspect does, nested queues included.
func TestListRawKeys(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 60*time.Second)
	c := openClient(t, "etcd://"+srv.Addr()+"?prefix=")

	x, err := c.TryLock(ctx, "x", dlock.WithMetadata("dlock"))
	if err != nil {
		t.Fatal(err)
	}
	m := concurrency.NewMutex(newSession(t, raw), "x/y")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	// Application keys: no lease, or a last segment that is no lease ID.
	for _, k := range []string{"app/1f", "app/config", "cfg"} {
		if _, err := raw.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"x", "x/y"}; !slices.Equal(keysOf(got), want) {
		t.Fatalf("List(\"\") = %q, want %q", keysOf(got), want)
	}
	for _, in := range got {
		ins, err := c.Inspect(ctx, in.Key)
		if err != nil {
			t.Fatal(err)
		}
		if in.Fence != ins.Fence || in.Metadata != ins.Metadata || in.Waiters != ins.Waiters {
			t.Errorf("List has %+v, Inspect %+v; want the same", in, ins)
		}
	}
	if got[0].Fence != x.Fence() || got[0].Waiters != 1 {
		t.Errorf("List: x = %+v, want fence %d and the Mutex's entry of x/y as a waiter", got[0], x.Fence())
	}
	if got, err := c.List(ctx, "x/"); err != nil || !slices.Equal(keysOf(got), []string{"x/y"}) {
		t.Errorf("List(x/) = %q, %v; want [x/y]", keysOf(got), err)
	}
}

// TestForceReleaseSharedLease: a lock on a shared lease that another
// client frees is lost at its holder — its Refresh says ErrNotHeld although
// the keep-alive of the lease succeeds, and the watchdog closes Done —
// while the other locks on the lease stay held; the key can be taken again
// with a higher fence.
func TestForceReleaseSharedLease(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 60*time.Second)
	url := "etcd://" + srv.Addr()
	holder, op := openClient(t, url), openClient(t, url)
	const ttl = 3 * time.Second

	entry := func(key string) *clientv3.GetResponse {
		t.Helper()
		resp, err := raw.Get(ctx, "/dlock/"+escapeKey(key)+"/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var locks []*dlock.Lock
	for i := range 3 {
		l, err := holder.TryLock(ctx, fmt.Sprintf("k%d", i), dlock.WithTTL(ttl), dlock.WithMetadata(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		locks = append(locks, l)
	}
	lease := entry("k0").Kvs[0].Lease
	for i := range locks {
		if got := entry(fmt.Sprintf("k%d", i)).Kvs[0].Lease; got != lease {
			t.Fatalf("k%d on lease %x, k0 on %x: want one shared lease", i, got, lease)
		}
	}

	// k0: the freed holder's own Refresh.
	in, err := op.ForceUnlock(ctx, "k0")
	if err != nil || !in.Held || in.Fence != locks[0].Fence() || in.Metadata != "0" || in.TTL <= 0 {
		t.Fatalf("ForceUnlock(k0) = %+v, %v; want held with fence %d, metadata 0 and a TTL", in, err, locks[0].Fence())
	}
	if n := len(entry("k0").Kvs); n != 0 {
		t.Fatalf("%d entries of k0 after ForceUnlock, want 0", n)
	}
	if err := locks[0].Refresh(ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh of the freed lock on a shared lease = %v, want ErrNotHeld", err)
	}
	if tr, err := raw.TimeToLive(ctx, clientv3.LeaseID(lease)); err != nil || tr.TTL <= 0 {
		t.Fatalf("the shared lease after ForceUnlock: %+v, %v; want alive", tr, err)
	}

	// k1: the watchdog's batched refresh notices.
	if _, err := op.ForceUnlock(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-locks[1].Done():
	case <-time.After(ttl + 5*time.Second):
		t.Fatalf("the freed auto-refreshed lock's Done still open %v after ForceUnlock", ttl+5*time.Second)
	}
	if err := locks[1].Err(); !errors.Is(err, dlock.ErrLost) {
		t.Errorf("Err of the freed lock = %v, want ErrLost", err)
	}

	// k2 was not freed and stays held on the lease.
	if err := locks[2].Refresh(ctx, 0); err != nil {
		t.Errorf("Refresh of the lock that was not freed = %v, want nil", err)
	}
	if err := locks[2].Err(); err != nil {
		t.Errorf("Err of the lock that was not freed = %v, want nil", err)
	}

	// The freed holder's Unlock frees nothing of a new holder, and its
	// client takes the key again with a higher fence.
	again, err := op.TryLock(ctx, "k0")
	if err != nil {
		t.Fatal(err)
	}
	_ = locks[0].Unlock(ctx)
	if n := len(entry("k0").Kvs); n != 1 {
		t.Fatalf("%d entries of k0 after the freed holder's Unlock, want the new holder's", n)
	}
	if again.Fence() <= locks[0].Fence() {
		t.Errorf("fence after ForceUnlock = %d, want above %d", again.Fence(), locks[0].Fence())
	}
	if err := again.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := holder.TryLock(ctx, "k0", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatalf("the freed holder's client taking the key again: %v", err)
	}
	if l.Fence() <= again.Fence() {
		t.Errorf("fence = %d, want above %d", l.Fence(), again.Fence())
	}
	if in, err := op.ForceUnlock(ctx, "never"); err != nil || in.Held {
		t.Errorf("ForceUnlock of a free key = %+v, %v; want not held", in, err)
	}
}

// TestListCompacted: when etcd compacts the revision List reads its pages
// at, List starts again at the current revision instead of failing.
func TestListCompacted(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 60*time.Second)
	c := openClient(t, "etcd://"+srv.Addr())
	const n = listPage + 10
	for i := range n {
		if _, err := c.TryLock(ctx, fmt.Sprintf("c/%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	compactions := 0
	listPageHook = func() {
		if compactions > 0 {
			return
		}
		compactions++
		resp, err := raw.Put(ctx, "/unrelated", "x")
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := raw.Compact(ctx, resp.Header.Revision); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { listPageHook = nil })
	got, err := c.List(ctx, "c/")
	if err != nil {
		t.Fatalf("List with a compaction between its pages: %v", err)
	}
	if compactions != 1 || len(got) != n {
		t.Errorf("List with a compaction between its pages: %d keys after %d compactions, want %d after 1", len(got), compactions, n)
	}
}
