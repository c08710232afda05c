package zkdlock

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

func TestShareNames(t *testing.T) {
	for name, want := range map[string]int{
		"_c_0123456789abcdef0123456789abcdef-share0-lock-0000000001": 0,
		"_c_0123456789abcdef0123456789abcdef-share3-lock-0000000002": 3,
		"_c_aa-share1048576-lock-0000000003":                         1 << 20,
	} {
		if got, ok := parseShare(name); !ok || got != want {
			t.Errorf("parseShare(%q) = %d, %v; want %d, true", name, got, ok, want)
		}
		if seq, err := parseSeq(name); err != nil || seq == 0 {
			t.Errorf("parseSeq(%q) = %d, %v: zk.Lock would not read it", name, seq, err)
		}
	}
	for _, name := range []string{
		"_c_0123456789abcdef0123456789abcdef-lock-0000000001", // ours, zk.Lock's, Curator's
		"abcdef__lock__0000000002",                            // the Python client's
		"_c_aa-share-lock-0000000003",
		"_c_aa-sharex-lock-0000000004",
		"_c_aa-share3lock-0000000005",
		"x",
	} {
		if _, ok := parseShare(name); ok {
			t.Errorf("parseShare(%q) reports a share node", name)
		}
	}
	q := sortQueue([]string{
		"_c_e-lock-0000000005", "_c_b-share2-lock-0000000002", "x",
		"_c_a-share2-lock-0000000001", "_c_c-share5-lock-0000000003", "_c_d-share2-lock-0000000004",
		"_c_f-share2-lock-0000000006",
	})
	var names []string
	for _, c := range grantedRun(q) {
		names = append(names, c.name)
	}
	if want := []string{"_c_a-share2-lock-0000000001", "_c_b-share2-lock-0000000002"}; !slices.Equal(names, want) {
		t.Errorf("grantedRun = %v, want %v", names, want)
	}
	if run := grantedRun(q[4:]); len(run) != 1 || run[0].share {
		t.Errorf("grantedRun with an exclusive node first = %+v, want it alone", run)
	}
}

// lockNodes returns the sorted names of the children of keyPath.
func lockNodes(t *testing.T, conn *zk.Conn, keyPath string) []string {
	t.Helper()
	kids, _, err := conn.Children(keyPath)
	if err != nil && !errors.Is(err, zk.ErrNoNode) {
		t.Fatalf("Children(%s): %v", keyPath, err)
	}
	slices.Sort(kids)
	return kids
}

// TestShareLayout: a share node's name and data, and no node left behind
// by refused or mismatched attempts.
func TestShareLayout(t *testing.T) {
	z := startStandalone(t)
	const base = "/shares"
	conn := connect(t, z.Addrs(), 5*time.Second, nil)
	d := openDriver(t, "zk://"+z.Addr()+base)
	ctx := t.Context()
	req := func(token string, limit int) driver.SharedRequest {
		return driver.SharedRequest{Request: driver.Request{Key: "K", Token: token, TTL: 5 * time.Second, Metadata: "m-" + token}, Limit: limit}
	}
	for _, tok := range []string{"a", "b"} {
		if res, err := d.AcquireShared(ctx, req(tok, 2)); err != nil || !res.Acquired {
			t.Fatalf("AcquireShared(%s) = %+v, %v", tok, res, err)
		}
	}
	if res, err := d.AcquireShared(ctx, req("c", 2)); err != nil || res.Acquired || res.HolderTTL != 5*time.Second {
		t.Errorf("AcquireShared over the limit = %+v, %v; want refused, HolderTTL 5s", res, err)
	}
	if _, err := d.AcquireShared(ctx, req("d", 0)); !errors.Is(err, driver.ErrLimitMismatch) {
		t.Errorf("AcquireShared with another limit = %v, want ErrLimitMismatch", err)
	}
	if res, err := d.Acquire(ctx, driver.Request{Key: "K", Token: "w", TTL: time.Second}); err != nil || res.Acquired || res.HolderTTL != 5*time.Second {
		t.Errorf("Acquire beside shares = %+v, %v; want refused, HolderTTL 5s", res, err)
	}
	kids := lockNodes(t, conn, Path(base, "K"))
	name := regexp.MustCompile(`^_c_[0-9a-f]{32}-share2-lock-[0-9]{10}$`)
	if len(kids) != 2 || !name.MatchString(kids[0]) || !name.MatchString(kids[1]) {
		t.Fatalf("children = %q, want the two share nodes alone, named _c_<guid>-share2-lock-<seq>", kids)
	}
	data, _, err := conn.Get(d.lookup("K", "a").n.path)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^dlock1 [0-9a-f]{32} 5000 2\nm-a$`).Match(data) {
		t.Errorf("share node data = %q, want dlock1 <hash> 5000 2\\nm-a", data)
	}
	// A renewal keeps the node; a refresh with a new TTL keeps the limit.
	if res, err := d.AcquireShared(ctx, req("a", 2)); err != nil || !res.Acquired {
		t.Fatalf("AcquireShared again = %+v, %v", res, err)
	}
	if errs := d.RefreshBatch(ctx, []driver.RefreshRequest{{Key: "K", Token: "a", TTL: 7 * time.Second}, {Key: "K", Token: "b", TTL: 5 * time.Second}, {Key: "K", Token: "c", TTL: time.Second}}); errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], driver.ErrNotHeld) {
		t.Errorf("RefreshBatch = %v, want nil, nil, ErrNotHeld", errs)
	}
	if data, _, _ := conn.Get(d.lookup("K", "a").n.path); !regexp.MustCompile(`^dlock1 [0-9a-f]{32} 7000 2\nm-a$`).Match(data) {
		t.Errorf("share node data after a refresh to 7s = %q", data)
	}
	if kids2 := lockNodes(t, conn, Path(base, "K")); !slices.Equal(kids, kids2) {
		t.Errorf("children after renewals = %q, want %q", kids2, kids)
	}
	for _, tok := range []string{"a", "b"} {
		if err := d.Release(ctx, "K", tok); err != nil {
			t.Fatalf("Release(%s): %v", tok, err)
		}
	}
	if kids := lockNodes(t, conn, Path(base, "K")); len(kids) != 0 {
		t.Errorf("children after the releases = %q, want none", kids)
	}
}

// TestShareAdmin: List and Inspect report a key held by shares, and
// ForceRelease frees every share; their holders find out at refresh.
func TestShareAdmin(t *testing.T) {
	z := startStandalone(t)
	url := "zk://" + z.Addr() + "/shareadmin"
	c, admin := openClient(t, url), openClient(t, url)
	ctx := t.Context()
	var readers []*dlock.Lock
	for range 3 {
		r, err := c.RWMutex("cfg").TryRLock(ctx, dlock.WithMetadata("reader"), dlock.WithAutoRefresh(false))
		if err != nil {
			t.Fatalf("TryRLock: %v", err)
		}
		readers = append(readers, r)
	}
	keys, err := admin.List(ctx, "")
	if err != nil || len(keys) != 1 || keys[0].Key != "cfg" || !keys[0].Held || keys[0].Fence != readers[2].Fence() || keys[0].Metadata != "reader" {
		t.Fatalf("List = %+v, %v; want cfg held with the newest reader's fence %d", keys, err, readers[2].Fence())
	}
	in, err := admin.ForceUnlock(ctx, "cfg")
	if err != nil || !in.Held || in.Fence != readers[2].Fence() {
		t.Fatalf("ForceUnlock = %+v, %v; want what was freed", in, err)
	}
	if h, err := admin.Holders(ctx, "cfg"); err != nil || len(h.Holders) != 0 {
		t.Errorf("Holders after ForceUnlock = %+v, %v; want none", h, err)
	}
	for _, r := range readers {
		if err := r.Refresh(ctx, 5*time.Second); !errors.Is(err, dlock.ErrNotHeld) {
			t.Errorf("Refresh of a freed reader = %v, want ErrNotHeld", err)
		}
	}
	w, err := admin.TryLock(ctx, "cfg")
	if err != nil {
		t.Fatalf("TryLock after ForceUnlock: %v", err)
	}
	if w.Fence() <= readers[2].Fence() {
		t.Errorf("writer's fence %d, want more than %d", w.Fence(), readers[2].Fence())
	}
	_ = w.Unlock(ctx)
}

// TestInteropZKLockWaitsForReaders: a zk.Lock on the key's path queues
// behind dlock's readers and, once queued, holds new readers back as a
// dlock writer does.
func TestInteropZKLockWaitsForReaders(t *testing.T) {
	z := startStandalone(t)
	const base, key = "/interop", "rw"
	conn := connect(t, z.Addrs(), 5*time.Second, nil)
	c := openClient(t, "zk://"+z.Addr()+base)
	ctx := t.Context()
	r, err := c.RWMutex(key).TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock: %v", err)
	}
	zl := zk.NewLock(conn, Path(base, key), zk.WorldACL(zk.PermAll))
	ch := lockZK(zl, "zk writer")
	wantPending(t, ch, "zk.Lock")
	if _, err := c.RWMutex(key).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("TryRLock while a zk.Lock waits = %v, want ErrNotAcquired", err)
	}
	if h, err := c.Holders(ctx, key); err != nil || len(h.Holders) != 1 || !h.Holders[0].Shared || h.WritersWaiting != 1 {
		t.Errorf("Holders = %+v, %v; want the reader and one writer waiting", h, err)
	}
	if err := r.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	wantGranted(t, ch, "zk.Lock after the reader's Unlock")
	if h, err := c.Holders(ctx, key); err != nil || len(h.Holders) != 1 || h.Holders[0].Shared || h.Holders[0].Metadata != "zk writer" {
		t.Errorf("Holders while zk.Lock holds = %+v, %v; want it alone, exclusive", h, err)
	}
	if _, err := c.RWMutex(key).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("TryRLock while a zk.Lock holds = %v, want ErrNotAcquired", err)
	}
	if err := zl.Unlock(); err != nil {
		t.Fatalf("zk.Lock Unlock: %v", err)
	}
	r, err = c.RWMutex(key).TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock after zk.Lock's Unlock: %v", err)
	}
	_ = r.Unlock(ctx)
}

// TestSemaphoreNoOversubscription: clients of their own take permits of a
// semaphore of 2 in a loop; never more than 2 are inside, and readers and
// writers of another key never overlap.
func TestSemaphoreNoOversubscription(t *testing.T) {
	z := startStandalone(t)
	url := "zk://" + z.Addr() + "/sem"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var (
		inside, most atomic.Int32
		readers      atomic.Int32
		writing      atomic.Bool
		wg           sync.WaitGroup
	)
	deadline := time.Now().Add(2 * time.Second)
	for i := range 6 {
		c := openClient(t, url)
		wg.Go(func() {
			for time.Now().Before(deadline) {
				p, err := c.Semaphore("pool", 2).Acquire(ctx)
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(2 * time.Millisecond)
				inside.Add(-1)
				_ = p.Unlock(ctx)
			}
		})
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if i%3 == 0 {
					l, err := c.RWMutex("rw").Lock(ctx)
					if err != nil {
						t.Errorf("Lock: %v", err)
						return
					}
					writing.Store(true)
					if readers.Load() != 0 {
						t.Error("a writer got in beside readers")
					}
					time.Sleep(2 * time.Millisecond)
					writing.Store(false)
					_ = l.Unlock(ctx)
					continue
				}
				r, err := c.RWMutex("rw").RLock(ctx)
				if err != nil {
					t.Errorf("RLock: %v", err)
					return
				}
				readers.Add(1)
				if writing.Load() {
					t.Error("a reader got in beside a writer")
				}
				time.Sleep(2 * time.Millisecond)
				readers.Add(-1)
				_ = r.Unlock(ctx)
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m > 2 || m == 0 {
		t.Errorf("at most %d permits out at once, want 1 or 2", m)
	}
}
