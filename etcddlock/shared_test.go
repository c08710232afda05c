package etcddlock

import (
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestSharedLease: the auto-refreshed locks of one client share one lease,
// so holding many of them costs far fewer keep-alives than one per lock per
// refresh interval; a lock without auto-refresh keeps a lease of its own and
// ends on the server at its TTL while the others stay refreshed; a Refresh
// with a longer TTL moves a lock off the shared lease; revoking the shared
// lease loses every lock on it; Close revokes the lease.
func TestSharedLease(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 90*time.Second)
	c, counter := countedClient(t, srv)

	const (
		n    = 300
		ttl  = 2 * time.Second
		hold = 4 * time.Second
	)
	// entryLease returns the lease of key's only entry, or 0 when it has none.
	entryLease := func(key string) clientv3.LeaseID {
		t.Helper()
		resp, err := raw.Get(ctx, "/dlock/"+escapeKey(key)+"/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) > 1 {
			t.Fatalf("%d entries under %q, want at most 1", len(resp.Kvs), key)
		}
		if len(resp.Kvs) == 0 {
			return 0
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}

	// Lock and unlock one key a few times: the shared lease is reused, not
	// granted again.
	var reused clientv3.LeaseID
	for i := range 3 {
		l, err := c.TryLock(ctx, "shared/cycle", dlock.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		if id := entryLease("shared/cycle"); id == 0 {
			t.Fatalf("cycle %d: no entry on the server", i)
		} else if i == 0 {
			reused = id
		} else if id != reused {
			t.Errorf("cycle %d: lease %x, want the shared lease %x again", i, id, reused)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// A Refresh with a longer TTL moves the lock to a lease of its own,
	// keeping its fence; once it is released, the shared lease serves its
	// key again.
	long, err := c.TryLock(ctx, "shared/longer", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	if id := entryLease("shared/longer"); id != reused {
		t.Errorf("lock on lease %x, want the shared lease %x", id, reused)
	}
	if err := long.Refresh(ctx, 2*ttl); err != nil {
		t.Fatalf("Refresh(%v): %v", 2*ttl, err)
	}
	if id := entryLease("shared/longer"); id == reused || id == 0 {
		t.Errorf("after Refresh(%v): lease %x, want a lease of its own", 2*ttl, id)
	}
	if in, err := c.Inspect(ctx, "shared/longer"); err != nil || in.Fence != long.Fence() {
		t.Errorf("Inspect after the move = %+v, %v; want fence %d", in, err, long.Fence())
	}
	if err := long.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	long, err = c.TryLock(ctx, "shared/longer", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	if id := entryLease("shared/longer"); id != reused {
		t.Errorf("lock after the moved one was released: lease %x, want the shared lease %x", id, reused)
	}
	if err := long.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	locks := make([]*dlock.Lock, n)
	parallel(t, n, 8, func(i int) error {
		l, err := c.TryLock(ctx, fmt.Sprintf("shared/%d", i), dlock.WithTTL(ttl))
		locks[i] = l
		return err
	})
	alone, err := c.TryLock(ctx, "shared/alone", dlock.WithTTL(ttl), dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	shared := entryLease("shared/0")
	for i := range n {
		if id := entryLease(fmt.Sprintf("shared/%d", i)); id != shared {
			t.Fatalf("lock %d on lease %x, lock 0 on %x: want one shared lease", i, id, shared)
		}
	}
	if id := entryLease("shared/alone"); id == shared || id == 0 {
		t.Fatalf("lock without auto-refresh on lease %x, want a lease of its own (shared: %x)", id, shared)
	}

	_, msgs0, _ := counter.snapshot()
	start := time.Now()
	// The lock without auto-refresh ends on the server at its TTL (etcd
	// checks for expired leases every 500 ms).
	select {
	case <-alone.Done():
	case <-time.After(ttl + time.Second):
		t.Fatalf("Done of the lock without auto-refresh still open %v after it was taken", time.Since(start))
	}
	for entryLease("shared/alone") != 0 {
		if time.Since(start) > ttl+3*time.Second {
			t.Fatalf("entry of the lock without auto-refresh still on the server %v after its TTL of %v", time.Since(start), ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := alone.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Errorf("Err of the lock without auto-refresh = %v, want ErrLost", err)
	}
	time.Sleep(hold - time.Since(start))
	_, msgs1, _ := counter.snapshot()
	held := time.Since(start)

	lost := 0
	for i, l := range locks {
		if l.Err() != nil || entryLease(fmt.Sprintf("shared/%d", i)) != shared {
			lost++
		}
	}
	if lost != 0 {
		t.Errorf("%d of %d auto-refreshed locks lost while held for %v, want 0", lost, n, held)
	}
	perLock := int64(float64(n) * held.Seconds() / (ttl / 3).Seconds())
	t.Logf("held %d locks for %v: %d keep-alive messages; one per lock per TTL/3 would be %d", n, held.Round(time.Millisecond), msgs1-msgs0, perLock)
	if msgs := msgs1 - msgs0; msgs > perLock/20 {
		t.Errorf("%d keep-alives while holding %d locks for %v, want far fewer than one per lock per TTL/3 (%d)", msgs, n, held, perLock)
	}

	// Half are released; the lease stays for the others.
	parallel(t, n/2, 8, func(i int) error { return locks[i].Unlock(ctx) })
	if tr, err := raw.TimeToLive(ctx, shared); err != nil || tr.TTL <= 0 {
		t.Fatalf("shared lease after releasing half its locks: %+v, %v; want alive", tr, err)
	}

	// Loss of the shared lease loses every lock on it.
	if _, err := raw.Revoke(ctx, shared); err != nil {
		t.Fatal(err)
	}
	for i := n / 2; i < n; i++ {
		select {
		case <-locks[i].Done():
		case <-time.After(ttl/3 + 2*time.Second):
			t.Fatalf("lock %d still not lost after its shared lease was revoked", i)
		}
		if err := locks[i].Err(); !errors.Is(err, dlock.ErrLost) {
			t.Fatalf("lock %d: Err = %v, want ErrLost", i, err)
		}
	}

	// New locks get a new shared lease; Close revokes it.
	l, err := c.TryLock(ctx, "shared/after", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	again := entryLease("shared/after")
	if again == shared || again == 0 {
		t.Fatalf("lock after the revocation on lease %x, want a new one (revoked: %x)", again, shared)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if tr, err := raw.TimeToLive(ctx, again); err == nil && tr.TTL > 0 {
		t.Errorf("shared lease after Close: TTL %d s, want revoked", tr.TTL)
	}
}
