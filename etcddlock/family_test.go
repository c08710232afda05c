package etcddlock

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

func TestShareSeg(t *testing.T) {
	for _, tc := range []struct {
		seg         string
		limit, slot int
		ok          bool
	}{
		{"\xff3.2", 3, 2, true},
		{"\xff1.0", 1, 0, true},
		{"\xff0.1a2b.7", 0, 0, true},
		{"\xff3.3", 0, 0, false},  // slot outside the limit
		{"\xff03.1", 0, 0, false}, // leading zero
		{"\xff3", 0, 0, false},
		{"\xff-1.0", 0, 0, false},
		{"1a2b", 0, 0, false}, // a mutex entry
		{"\xff3.x", 0, 0, false},
	} {
		limit, slot, ok := shareSeg(tc.seg)
		if ok != tc.ok || ok && (limit != tc.limit || slot != tc.slot) {
			t.Errorf("shareSeg(%q) = %d, %d, %v; want %d, %d, %v", tc.seg, limit, slot, ok, tc.limit, tc.slot, tc.ok)
		}
	}
	// Shares sort after every mutex entry, and the two ranges of a queue
	// hold nothing of another queue.
	lo, hi := shareRange("/dlock/k")
	if !(entryName("/dlock/k", 0x7fffffffffffffff) < lo && lo < slotName("/dlock/k", 1, 0) && slotName("/dlock/k", 1, 0) < hi) {
		t.Errorf("range [%q, %q) misplaced", lo, hi)
	}
	if "/dlock/k/" >= lo || hi > "/dlock/k0" || strings.HasPrefix("/dlock/k0", "/dlock/k/") {
		t.Errorf("range [%q, %q) outside the queue", lo, hi)
	}
}

// TestFamily checks the layout of shares and how they meet mutex entries
// of this driver and of concurrency.Mutex.
func TestFamily(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	url := "etcd://" + srv.Addr()
	t.Run("Layout", func(t *testing.T) {
		ctx := testCtx(t, 20*time.Second)
		c := openClient(t, url)
		p, err := c.Semaphore("fam/layout", 3).TryAcquire(ctx, dlock.WithMetadata("permit"))
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.RWMutex("fam/layout-rw").TryRLock(ctx, dlock.WithMetadata("reader"))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			pfx, start, value string
			fence             uint64
		}{
			{"/dlock/fam%2Flayout", "/dlock/fam%2Flayout/\xff3.", "permit", p.Fence()},
			{"/dlock/fam%2Flayout-rw", "/dlock/fam%2Flayout-rw/\xff0.", "reader", r.Fence()},
		} {
			resp, err := raw.Get(ctx, tc.pfx+"/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 {
				t.Fatalf("%d entries under %q, want 1", len(resp.Kvs), tc.pfx)
			}
			kv := resp.Kvs[0]
			if !strings.HasPrefix(string(kv.Key), tc.start) || string(kv.Value) != tc.value || kv.Lease == 0 || uint64(kv.CreateRevision) != tc.fence {
				t.Errorf("entry %q = %q on lease %x, created at %d; want a name starting %q, value %q, a lease, created at the fence %d",
					kv.Key, kv.Value, kv.Lease, kv.CreateRevision, tc.start, tc.value, tc.fence)
			}
		}
		for _, l := range []*dlock.Lock{p, r} {
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if keys := queueKeys(t, raw, "/dlock/fam%2Flayout"); len(keys) != 0 {
			t.Errorf("entries left after the release: %q", keys)
		}
	})
	t.Run("Mutex", func(t *testing.T) {
		// With the interoperable layout, a concurrency.Mutex waits for the
		// readers in and holds new ones back while it waits.
		ctx := testCtx(t, 30*time.Second)
		c := openClient(t, url+"?prefix=")
		key := "fam/mutex"
		r, err := c.RWMutex(key).TryRLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if infos, err := c.List(ctx, key); err != nil || len(infos) != 1 || infos[0].Key != key || infos[0].Fence != r.Fence() {
			t.Errorf("List = %+v, %v; want %q held with the reader's fence %d", infos, err, key, r.Fence())
		}
		m := concurrency.NewMutex(newSession(t, raw), key)
		if err := m.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
			t.Fatalf("Mutex.TryLock while a reader reads = %v, want ErrLocked", err)
		}
		locked := make(chan error, 1)
		go func() { locked <- m.Lock(ctx) }()
		waitFor(t, func() bool { h, err := c.Holders(ctx, key); return err == nil && h.WritersWaiting == 1 })
		if _, err := c.RWMutex(key).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryRLock while a Mutex waits = %v, want ErrNotAcquired", err)
		}
		select {
		case err := <-locked:
			t.Fatalf("Mutex.Lock returned while a reader reads: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := r.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-locked; err != nil {
			t.Fatalf("Mutex.Lock: %v", err)
		}
		if uint64(m.Header().Revision) <= r.Fence() {
			t.Errorf("Mutex revision %d, want more than the reader's fence %d", m.Header().Revision, r.Fence())
		}
		if _, err := c.RWMutex(key).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryRLock while the Mutex holds = %v, want ErrNotAcquired", err)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		r2, err := c.RWMutex(key).TryRLock(ctx)
		if err != nil {
			t.Fatalf("TryRLock after the Mutex: %v", err)
		}
		_ = r2.Unlock(ctx)
	})
	t.Run("NoOversubscription", func(t *testing.T) {
		ctx := testCtx(t, 60*time.Second)
		clients := []*dlock.Client{openClient(t, url), openClient(t, url), openClient(t, url)}
		const limit = 2
		var inside, peak, granted atomic.Int32
		var wg sync.WaitGroup
		for i := range 6 {
			c := clients[i%len(clients)]
			wg.Go(func() {
				for range 8 {
					p, err := c.Semaphore("fam/over", limit).Acquire(ctx, dlock.WithRetry(dlock.LinearBackoff(5*time.Millisecond)))
					if err != nil {
						t.Errorf("Acquire: %v", err)
						return
					}
					granted.Add(1)
					n := inside.Add(1)
					for {
						if old := peak.Load(); n <= old || peak.CompareAndSwap(old, n) {
							break
						}
					}
					time.Sleep(5 * time.Millisecond)
					inside.Add(-1)
					if err := p.Unlock(ctx); err != nil {
						t.Errorf("Unlock: %v", err)
					}
				}
			})
		}
		wg.Wait()
		if p := peak.Load(); p > limit {
			t.Errorf("%d permits out at once, limit %d", p, limit)
		}
		if g := granted.Load(); g != 48 {
			t.Errorf("%d permits granted, want 48", g)
		}
	})
	t.Run("ListAndForce", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		a, b := openClient(t, url), openClient(t, url)
		key := "fam/force"
		p1, err := a.Semaphore(key, 2).TryAcquire(ctx, dlock.WithMetadata("one"))
		if err != nil {
			t.Fatal(err)
		}
		p2, err := b.Semaphore(key, 2).TryAcquire(ctx, dlock.WithMetadata("two"))
		if err != nil {
			t.Fatal(err)
		}
		infos, err := a.List(ctx, "fam/force")
		if err != nil || len(infos) != 1 || !infos[0].Held || infos[0].Fence != p2.Fence() || infos[0].Metadata != "two" || infos[0].Waiters != 0 || infos[0].TTL <= 0 {
			t.Fatalf("List = %+v, %v; want the key held with the newest permit's fence %d", infos, err, p2.Fence())
		}
		in, err := a.Inspect(ctx, key)
		if in.TTL = infos[0].TTL; err != nil || in != infos[0] {
			t.Errorf("Inspect = %+v, %v; want what List reports, %+v", in, err, infos[0])
		}
		freed, err := a.ForceUnlock(ctx, key)
		if err != nil || !freed.Held || freed.Fence != p2.Fence() {
			t.Fatalf("ForceUnlock = %+v, %v; want the permits freed", freed, err)
		}
		if keys := queueKeys(t, raw, "/dlock/fam%2Fforce"); len(keys) != 0 {
			t.Errorf("entries left after ForceUnlock: %q", keys)
		}
		for _, p := range []*dlock.Lock{p1, p2} {
			if err := p.Refresh(ctx, 30*time.Second); !errors.Is(err, dlock.ErrNotHeld) {
				t.Errorf("Refresh of a freed permit = %v, want ErrNotHeld", err)
			}
		}
		w, err := b.TryLock(ctx, key)
		if err != nil || w.Fence() <= p2.Fence() {
			t.Fatalf("TryLock after ForceUnlock = %v; want a fence above %d", err, p2.Fence())
		}
		_ = w.Unlock(ctx)
	})
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10 s")
}
