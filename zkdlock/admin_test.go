package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
)

// keysOf returns the keys of infos, in order.
func keysOf(infos []dlock.Info) []string {
	var keys []string
	for _, in := range infos {
		keys = append(keys, in.Key)
	}
	return keys
}

// TestListNamespace: List returns exactly the held keys under its base, in
// key order (not in the order of their encoded node names), each as Inspect
// reports it, a zk.Lock's lock included; nodes Path cannot produce, key
// nodes without lock nodes and other bases are left out. Under the root, a
// key "zookeeper" is listed and ZooKeeper's own /zookeeper is not.
func TestListNamespace(t *testing.T) {
	z := startStandalone(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	conn := connect(t, z.Addrs(), 10*time.Second, nil)
	url := "zk://" + z.Addr()
	opts := dlock.WithLockDefaults(dlock.WithTTL(10 * time.Second))
	holder, waiter := openClient(t, url+"/t", opts), openClient(t, url+"/t", opts)
	lister, other := openClient(t, url+"/t"), openClient(t, url+"/other", opts)

	// Encoded, "/" is "%2F", which sorts before "&"; "." is "%2E".
	keys := []string{"a/", "a&", "a%", "a$", ".", "..", ".a", "ü", "\x01", "z"}
	for _, k := range keys {
		if _, err := holder.TryLock(ctx, k, dlock.WithMetadata("m="+k)); err != nil {
			t.Fatalf("TryLock(%q): %v", k, err)
		}
	}
	zl := zk.NewLock(conn, Path("/t", "zk"), zk.WorldACL(zk.PermAll))
	if err := zl.LockWithData([]byte("zk.Lock")); err != nil {
		t.Fatal(err)
	}
	keys = append(keys, "zk")
	if _, err := other.TryLock(ctx, "elsewhere"); err != nil {
		t.Fatal(err)
	}
	// Nodes that are no queue of a held key: escapes encodeKey never
	// writes (with a lock node under "%41", which is not Path's "A"), a
	// key node without lock nodes, one with another child.
	for _, p := range []string{"/t/%zz", "/t/lower%2f", "/t/%41", "/t/%2", "/t/empty", "/t/x", "/t/x/config", "/t/%41/lock-0000000001"} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("Create(%s): %v", p, err)
		}
	}
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

	got, err := lister.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(keys))
	if !slices.Equal(keysOf(got), want) {
		t.Fatalf("List(\"\") = %q, want %q", keysOf(got), want)
	}
	for _, in := range got {
		ins, err := lister.Inspect(ctx, in.Key)
		if err != nil {
			t.Fatal(err)
		}
		if in != ins {
			t.Errorf("List has %+v, Inspect %+v; want the same", in, ins)
		}
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"a", []string{"a$", "a%", "a&", "a/"}},
		{"a/", []string{"a/"}},
		{".", []string{".", "..", ".a"}},
		{"..", []string{".."}},
		{"ü", []string{"ü"}},
		{"A", nil},
		{"x", nil},
		{"empty", nil},
	} {
		got, err := lister.List(ctx, tc.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(keysOf(got), tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, keysOf(got), tc.want)
		}
	}

	root := openClient(t, url+"/", opts)
	if _, err := root.TryLock(ctx, "zookeeper"); err != nil {
		t.Fatal(err)
	}
	got, err = root.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keysOf(got), []string{"zookeeper"}) {
		t.Errorf("List under the root = %q, want [zookeeper]", keysOf(got))
	}
	none := openClient(t, url+"/absent")
	if got, err := none.List(ctx, ""); err != nil || len(got) != 0 {
		t.Errorf("List under a base that does not exist = %q, %v; want nothing", keysOf(got), err)
	}
}

// TestForceReleaseAutoRefresh: locks that another client frees are lost at
// their holder — its Refresh says ErrNotHeld, and so does the batched
// refresh of the watchdog, which closes Done — while its other locks stay
// held; the next waiter takes the key with a higher fence. A zk.Lock holder
// is freed too, its waiter then granted.
func TestForceReleaseAutoRefresh(t *testing.T) {
	z := startStandalone(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	url := "zk://" + z.Addr() + "/force"
	const ttl = 3 * time.Second
	holder, op := openClient(t, url), openClient(t, url)

	var locks []*dlock.Lock
	for i := range 3 {
		l, err := holder.TryLock(ctx, fmt.Sprintf("k%d", i), dlock.WithTTL(ttl), dlock.WithMetadata(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		locks = append(locks, l)
	}
	in, err := op.ForceUnlock(ctx, "k0")
	if err != nil || !in.Held || in.Fence != locks[0].Fence() || in.Metadata != "0" || in.TTL != ttl {
		t.Fatalf("ForceUnlock(k0) = %+v, %v; want held with fence %d, metadata 0, TTL %v", in, err, locks[0].Fence(), ttl)
	}
	if err := locks[0].Refresh(ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh of the freed lock = %v, want ErrNotHeld", err)
	}

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
	if err := locks[2].Refresh(ctx, 0); err != nil {
		t.Errorf("Refresh of the lock that was not freed = %v, want nil", err)
	}
	if err := locks[2].Err(); err != nil {
		t.Errorf("Err of the lock that was not freed = %v, want nil", err)
	}

	// The freed holder's Unlock frees nothing of the new holder.
	again, err := op.TryLock(ctx, "k0", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	_ = locks[0].Unlock(ctx)
	if in, err := op.Inspect(ctx, "k0"); err != nil || in.Fence != again.Fence() {
		t.Errorf("Inspect after the freed holder's Unlock = %+v, %v; want the new holder's fence %d", in, err, again.Fence())
	}
	if again.Fence() <= locks[0].Fence() {
		t.Errorf("fence after ForceUnlock = %d, want above %d", again.Fence(), locks[0].Fence())
	}

	// A zk.Lock holder with a dlock waiter behind it.
	conn := connect(t, z.Addrs(), 10*time.Second, nil)
	zl := zk.NewLock(conn, Path("/force", "zk"), zk.WorldACL(zk.PermAll))
	if err := zl.LockWithData([]byte("zk.Lock")); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := holder.Lock(ctx, "zk", dlock.WithTTL(ttl))
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if in, err := op.Inspect(ctx, "zk"); err == nil && in.Waiters == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dlock waiter did not queue within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if in, err := op.ForceUnlock(ctx, "zk"); err != nil || in.Metadata != "zk.Lock" || in.Waiters != 1 {
		t.Fatalf("ForceUnlock of a zk.Lock = %+v, %v; want its data as metadata and 1 waiter", in, err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("the waiter after ForceUnlock: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not granted within 10 s of ForceUnlock")
	}
	if in, err := op.ForceUnlock(ctx, "never"); err != nil || in.Held {
		t.Errorf("ForceUnlock of a free key = %+v, %v; want not held", in, err)
	}
}
