package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

func TestEscapeKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a/b", "a%2Fb"},
		{"a%2Fb", "a%252Fb"},
		{"%", "%25"},
		{"/", "%2F"},
		{"..", ".."},
		{"new\nline", "new\nline"},
		{"ключ/鍵", "ключ%2F鍵"},
	}
	for _, tc := range tests {
		if got := escapeKey(tc.in); got != tc.want {
			t.Errorf("escapeKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	seen := map[string]string{}
	for _, k := range []string{"a/b", "a%2Fb", "a%b", "a%252Fb", "a/b/", "a//b", "a%2F%2Fb", "/", "%2F", "%"} {
		e := escapeKey(k)
		if strings.Contains(e, "/") {
			t.Errorf("escapeKey(%q) = %q contains '/'", k, e)
		}
		if other, dup := seen[e]; dup {
			t.Errorf("escapeKey(%q) = escapeKey(%q) = %q", k, other, e)
		}
		seen[e] = k
	}
}

func TestLeaseSeconds(t *testing.T) {
	tests := []struct {
		ttl  time.Duration
		want int64
	}{
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{1500 * time.Millisecond, 2},
		{30 * time.Second, 30},
		{10 * time.Millisecond, 1},
	}
	for _, tc := range tests {
		if got := leaseSeconds(tc.ttl); got != tc.want {
			t.Errorf("leaseSeconds(%v) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
}

// TestDriver runs the etcd-specific behaviour against one single-member
// server.
func TestDriver(t *testing.T) {
	srv := testserver.StartEtcd(t)
	url := "etcd://" + srv.Addr()
	raw := rawClient(t, srv.Endpoints())
	tests := []struct {
		name string
		fn   func(t *testing.T, url string, raw *clientv3.Client)
	}{
		{"KeyLayout", testKeyLayout},
		{"RevokeHolderLease", testRevokeHolderLease},
		{"WaiterLeaseLost", testWaiterLeaseLost},
		{"WaiterEntryGoneWithPredecessor", testWaiterEntryGoneWithPredecessor},
		{"SameKeySameClient", testSameKeySameClient},
		{"ReleaseNeverDeletesNewer", testReleaseNeverDeletesNewer},
		{"RefreshLongerTTL", testRefreshLongerTTL},
		{"InspectQueue", testInspectQueue},
		{"CloseEndsWaiters", testCloseEndsWaiters},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, url, raw) })
	}
}

// queueKeys returns the etcd keys of a queue prefix, oldest first.
func queueKeys(t *testing.T, raw *clientv3.Client, pfx string) []string {
	t.Helper()
	resp, err := raw.Get(testCtx(t, 5*time.Second), pfx+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatalf("Get %q: %v", pfx, err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// holderLease returns the lease of the first entry under pfx.
func holderLease(t *testing.T, raw *clientv3.Client, pfx string) clientv3.LeaseID {
	t.Helper()
	resp, err := raw.Get(testCtx(t, 5*time.Second), pfx+"/", clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("no holder under %q: %v", pfx, err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

func testKeyLayout(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 20*time.Second)
	tests := []struct {
		url, key, wantPfx string
	}{
		{url, "layout/a/b", "/dlock/layout%2Fa%2Fb"},
		{url, "layout%x", "/dlock/layout%25x"},
		{url + "?prefix=", "layout/raw/K", "layout/raw/K"},
		{url + "?prefix=/app/", "layout-k", "/app/layout-k"},
	}
	for _, tc := range tests {
		c := openClient(t, tc.url)
		l, err := c.TryLock(ctx, tc.key, dlock.WithMetadata("m=1"))
		if err != nil {
			t.Fatalf("%s TryLock(%q): %v", tc.url, tc.key, err)
		}
		resp, err := raw.Get(ctx, tc.wantPfx+"/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			t.Fatalf("%s: %d entries under %q, want 1", tc.url, len(resp.Kvs), tc.wantPfx+"/")
		}
		kv := resp.Kvs[0]
		if want := fmt.Sprintf("%s/%x", tc.wantPfx, kv.Lease); string(kv.Key) != want {
			t.Errorf("entry key = %q, want %q (prefix + hex of its lease)", kv.Key, want)
		}
		if got, want := uint64(kv.CreateRevision), l.Fence(); got != want {
			t.Errorf("create revision = %d, want the fence %d", got, want)
		}
		if string(kv.Value) != "m=1" {
			t.Errorf("value = %q, want the metadata %q", kv.Value, "m=1")
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if keys := queueKeys(t, raw, tc.wantPfx); len(keys) != 0 {
			t.Errorf("after Unlock: entries %q left", keys)
		}
	}
}

func testRevokeHolderLease(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 30*time.Second)
	a, b := openClient(t, url), openClient(t, url)
	key := "revoke-holder"
	ttl := 3 * time.Second
	la, err := a.TryLock(ctx, key, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	waiter := make(chan error, 1)
	var lb *dlock.Lock
	go func() {
		var err error
		lb, err = b.Lock(ctx, key, dlock.WithTTL(ttl))
		waiter <- err
	}()
	waitWaiters(t, a, key, 1)

	revoked := time.Now()
	if _, err := raw.Revoke(ctx, holderLease(t, raw, "/dlock/"+key)); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	select {
	case <-la.Done():
	case <-time.After(ttl/3 + 2*time.Second):
		t.Fatalf("holder's Done still open %v after its lease was revoked", time.Since(revoked))
	}
	if err := la.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Fatalf("holder's Err = %v, want ErrLost", err)
	}
	select {
	case err := <-waiter:
		if err != nil {
			t.Fatalf("waiter: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not granted after the holder's lease was revoked")
	}
	if lb.Fence() <= la.Fence() {
		t.Errorf("waiter's fence %d, want > the revoked holder's %d", lb.Fence(), la.Fence())
	}
	if err := la.Refresh(ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh after revoke = %v, want ErrNotHeld", err)
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitWaiters polls Inspect until key has n waiters.
func waitWaiters(t *testing.T, c *dlock.Client, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		in, err := c.Inspect(t.Context(), key)
		if err == nil && in.Waiters == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Inspect(%q) = %+v, %v; want %d waiters", key, in, err, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testWaiterLeaseLost: a waiter whose lease is revoked while it waits must
// not report a grant on its lost entry; it joins again and gets a real one.
func testWaiterLeaseLost(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 30*time.Second)
	a, b := openClient(t, url), openClient(t, url)
	key := "waiter-lease-lost"
	pfx := "/dlock/" + key
	la, err := a.TryLock(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *dlock.Lock, 1)
	go func() {
		l, err := b.Lock(ctx, key)
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
		got <- l
	}()
	waitWaiters(t, a, key, 1)
	keys := queueKeys(t, raw, pfx)
	resp, err := raw.Get(ctx, keys[1])
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("waiter's entry: %v", err)
	}
	lostRev := resp.Kvs[0].CreateRevision
	if _, err := raw.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	// The waiter notices (its keep-alive fails) and joins again.
	waitWaiters(t, a, key, 1)
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	lb := <-got
	if lb == nil {
		return
	}
	if lb.Fence() == uint64(lostRev) {
		t.Fatalf("granted on the revoked entry (fence %d)", lostRev)
	}
	in, err := a.Inspect(ctx, key)
	if err != nil || !in.Held || in.Fence != lb.Fence() {
		t.Fatalf("Inspect = %+v, %v; want held with the waiter's fence %d", in, err, lb.Fence())
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// testWaiterEntryGoneWithPredecessor: the holder's and the waiter's entries
// vanish in one revision. The waiter wakes on its predecessor's deletion
// and must see that its own entry is gone too: no grant on it.
func testWaiterEntryGoneWithPredecessor(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 30*time.Second)
	a, b := openClient(t, url), openClient(t, url)
	key := "waiter-entry-gone"
	pfx := "/dlock/" + key
	la, err := a.TryLock(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *dlock.Lock, 1)
	go func() {
		l, err := b.Lock(ctx, key)
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
		got <- l
	}()
	waitWaiters(t, a, key, 1)
	keys := queueKeys(t, raw, pfx)
	resp, err := raw.Txn(ctx).Then(clientv3.OpDelete(keys[0]), clientv3.OpDelete(keys[1])).Commit()
	if err != nil {
		t.Fatal(err)
	}
	lb := <-got
	if lb == nil {
		return
	}
	if lb.Fence() <= uint64(resp.Header.Revision) {
		t.Fatalf("waiter granted with fence %d, not after the deletion at revision %d: a grant on its deleted entry", lb.Fence(), resp.Header.Revision)
	}
	in, err := a.Inspect(ctx, key)
	if err != nil || !in.Held || in.Fence != lb.Fence() {
		t.Fatalf("Inspect = %+v, %v; want held with the waiter's fence %d", in, err, lb.Fence())
	}
	if err := la.Unlock(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Unlock of the deleted holder = %v, want ErrNotHeld", err)
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// testSameKeySameClient: two locks on one key from one client are two
// queue entries, each with its own lease.
func testSameKeySameClient(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 30*time.Second)
	c := openClient(t, url)
	key := "same-client"
	l1, err := c.TryLock(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *dlock.Lock, 1)
	go func() {
		l, err := c.Lock(ctx, key)
		if err != nil {
			t.Errorf("second Lock: %v", err)
		}
		got <- l
	}()
	waitWaiters(t, c, key, 1)
	if keys := queueKeys(t, raw, "/dlock/"+key); len(keys) != 2 || keys[0] == keys[1] {
		t.Fatalf("queue = %q, want two entries", keys)
	}
	select {
	case <-got:
		t.Fatal("second lock granted while the first is held")
	case <-time.After(100 * time.Millisecond):
	}
	if err := l1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := <-got
	if l2 == nil {
		return
	}
	if err := l1.Refresh(ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh of the released first lock = %v, want ErrNotHeld", err)
	}
	if err := l2.Refresh(ctx, 0); err != nil {
		t.Errorf("Refresh of the second lock: %v", err)
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// testReleaseNeverDeletesNewer: a release by an owner whose entry is gone
// (deleted behind its back, as after an expiry) must not delete the next
// owner's entry.
func testReleaseNeverDeletesNewer(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 30*time.Second)
	da, err := openDriver(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer da.Close()
	db, err := openDriver(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := "retried-release"
	req := driver.Request{Key: key, Token: "token-a", TTL: 5 * time.Second}
	ra, err := da.Acquire(ctx, req)
	if err != nil || !ra.Acquired {
		t.Fatalf("Acquire a = %+v, %v", ra, err)
	}
	// The entry vanishes (an operator, an expiry) and b takes the key.
	if _, err := raw.Delete(ctx, "/dlock/"+key+"/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	rb, err := db.Acquire(ctx, driver.Request{Key: key, Token: "token-b", TTL: 5 * time.Second})
	if err != nil || !rb.Acquired {
		t.Fatalf("Acquire b = %+v, %v", rb, err)
	}
	for i := 0; i < 2; i++ {
		if err := da.Release(ctx, key, "token-a"); !errors.Is(err, driver.ErrNotHeld) {
			t.Fatalf("release %d by the old owner = %v, want ErrNotHeld", i, err)
		}
	}
	if err := da.Refresh(ctx, key, "token-a", 5*time.Second); !errors.Is(err, driver.ErrNotHeld) {
		t.Fatalf("refresh by the old owner = %v, want ErrNotHeld", err)
	}
	in, err := db.Inspect(ctx, key)
	if err != nil || !in.Held || in.Fence != rb.Fence {
		t.Fatalf("Inspect = %+v, %v; want held by b (fence %d)", in, err, rb.Fence)
	}
	if err := db.Release(ctx, key, "token-b"); err != nil {
		t.Fatal(err)
	}
}

// testRefreshLongerTTL: a refresh past the lease's TTL moves the entry to a
// longer lease, keeping its fence and its place, and the key outlives the
// first lease.
func testRefreshLongerTTL(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 30*time.Second)
	c := openClient(t, url)
	key := "refresh-longer"
	l, err := c.TryLock(ctx, key, dlock.WithTTL(time.Second), dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	first := holderLease(t, raw, "/dlock/"+key)
	if err := l.Refresh(ctx, 4*time.Second); err != nil {
		t.Fatalf("Refresh(4s): %v", err)
	}
	time.Sleep(2 * time.Second)
	if err := l.Err(); err != nil {
		t.Fatalf("Err 2s after Refresh(4s) = %v, want nil", err)
	}
	in, err := c.Inspect(ctx, key)
	if err != nil || !in.Held || in.Fence != l.Fence() {
		t.Fatalf("Inspect = %+v, %v; want held with fence %d", in, err, l.Fence())
	}
	if now := holderLease(t, raw, "/dlock/"+key); now == first {
		t.Errorf("entry still on its first lease %x", first)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func testInspectQueue(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 30*time.Second)
	key := "inspect-queue"
	holder := openClient(t, url)
	l, err := holder.TryLock(ctx, key, dlock.WithMetadata("holder"), dlock.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 3)
	for i := 0; i < 3; i++ {
		c := openClient(t, url)
		go func() {
			defer func() { done <- struct{}{} }()
			if l, err := c.Lock(wctx, key); err == nil {
				_ = l.Unlock(ctx)
			}
		}()
	}
	waitWaiters(t, holder, key, 3)
	in, err := holder.Inspect(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !in.Held || in.Fence != l.Fence() || in.Metadata != "holder" || in.TTL <= 0 || in.TTL > 10*time.Second {
		t.Errorf("Inspect = %+v; want held, fence %d, metadata %q, 0 < TTL <= 10s", in, l.Fence(), "holder")
	}
	cancel()
	for i := 0; i < 3; i++ {
		<-done
	}
	waitWaiters(t, holder, key, 0)
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if keys := queueKeys(t, raw, "/dlock/"+key); len(keys) != 0 {
		t.Fatalf("entries left after every waiter gave up and the holder unlocked: %q", keys)
	}
}

func testCloseEndsWaiters(t *testing.T, url string, raw *clientv3.Client) {
	ctx := testCtx(t, 30*time.Second)
	key := "close-waiters"
	a := openClient(t, url)
	la, err := a.TryLock(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	b := openClient(t, url)
	errc := make(chan error, 1)
	go func() {
		_, err := b.Lock(ctx, key)
		errc <- err
	}()
	waitWaiters(t, a, key, 1)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, dlock.ErrClosed) {
			t.Fatalf("waiter after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter still waiting 5s after Close")
	}
	if keys := queueKeys(t, raw, "/dlock/"+key); len(keys) != 1 {
		t.Fatalf("queue after the waiter's client closed = %q, want only the holder", keys)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestWaitIgnoresEarlierDeletion: a waiter's watch of its own entry can
// start before the entry's creation, when the member serving it lags
// behind, and then delivers the deletion of an earlier entry of the same
// name (a client's entries are named after its lease). That deletion is not
// ours: the waiter keeps waiting for its predecessor. A watch from the
// earlier deletion's revision plays the lagging member.
func TestWaitIgnoresEarlierDeletion(t *testing.T) {
	srv := testserver.StartEtcd(t)
	cli := rawClient(t, srv.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const name, pred = "/dt/wait/entry", "/dt/wait/pred"
	put := func(key string) int64 {
		t.Helper()
		resp, err := cli.Put(ctx, key, "")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	del := func(key string) int64 {
		t.Helper()
		resp, err := cli.Delete(ctx, key)
		if err != nil || resp.Deleted != 1 {
			t.Fatalf("Delete(%s) = %+v, %v", key, resp, err)
		}
		return resp.Header.Revision
	}
	put(name) // the client's entry of its last term
	gone := del(name)
	put(pred)
	myRev := put(name)

	own := cli.Watch(ctx, name, clientv3.WithRev(gone), clientv3.WithFilterPut())
	pw := cli.Watch(ctx, pred, clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	if err := awaitCreated(ctx, pw); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- waitDeleted(ctx, pw, own, nil, myRev) }()
	select {
	case err := <-done:
		t.Fatalf("waitDeleted = %v before the predecessor's deletion, want it still waiting", err)
	case <-time.After(300 * time.Millisecond):
	}
	del(pred)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waitDeleted after the predecessor's deletion = %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("waitDeleted did not return after the predecessor's deletion")
	}
}
