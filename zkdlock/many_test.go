package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// TestAcquireMany: LockMany of free keys is one multi (an ordered TryLock
// per key would be one each), its nodes named and fenced as Acquire's; a
// key held by a zk.Lock refuses the whole call, leaving no node on the
// others and the zk.Lock holding, with HolderTTL set for that key only; a
// key node that may not be written, and more keys than one multi may carry,
// are refused with an error wrapping errors.ErrUnsupported, creating no
// node, and LockMany then takes the keys one by one.
func TestAcquireMany(t *testing.T) {
	z := startStandalone(t)
	const base = "/many"
	conn := connect(t, z.Addrs(), 10*time.Second, nil)
	ctx := t.Context()
	kids := func(key string) []string {
		t.Helper()
		names, _, err := conn.Children(Path(base, key))
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			t.Fatal(err)
		}
		return names
	}

	t.Run("OneMulti", func(t *testing.T) {
		o := newOpCounter()
		c, err := NewClient(connect(t, z.Addrs(), 10*time.Second, o.dial), Options{Base: base, SessionTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		keys := []string{"one/a", "one/b", "one/c"}
		for round := range 3 {
			s := o.snapshot()
			set, err := c.LockMany(ctx, keys, dlock.WithTTL(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			// The first round creates the base and key nodes too.
			if ops, total := o.since(s); round > 0 && (ops[opMulti] != 1 || total != 1) {
				t.Errorf("round %d: LockMany of %d free keys sent %v; want one multi", round, len(keys), ops)
			}
			for _, l := range set.Locks() {
				names := kids(l.Key())
				if len(names) != 1 || !strings.HasPrefix(names[0], protectedPrefix) {
					t.Fatalf("children of %q = %v; want one protected lock node", l.Key(), names)
				}
				_, stat, err := conn.Exists(Path(base, l.Key()) + "/" + names[0])
				if err != nil || uint64(stat.Czxid) != l.Fence() {
					t.Errorf("%q: node czxid %v (%v), want the fence %d", l.Key(), stat, err, l.Fence())
				}
			}
			if err := set.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})

	do := newOpCounter()
	dl, err := NewDriver(connect(t, z.Addrs(), 10*time.Second, do.dial), Options{Base: base, SessionTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dl.Close() })
	d := dl.(*zkDriver)
	reqs := func(keys ...string) []driver.Request {
		r := make([]driver.Request, len(keys))
		for i, k := range keys {
			r[i] = driver.Request{Key: k, Token: fmt.Sprint("t", i), TTL: 5 * time.Second, Metadata: "m"}
		}
		return r
	}

	t.Run("ZKLockHolds", func(t *testing.T) {
		zl := zk.NewLock(conn, Path(base, "zl/b"), zk.WorldACL(zk.PermAll))
		wantGranted(t, lockZK(zl, "other"), "zk.Lock on a free key")
		if _, err := conn.Create(Path(base, "zl/a"), nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Create(Path(base, "zl/c"), nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		// The first call finds out which key nodes exist (a failed multi
		// and one read each); the second knows.
		var res []driver.Result
		for try := range 2 {
			s := do.snapshot()
			if res, err = d.AcquireMany(ctx, reqs("zl/a", "zl/b", "zl/c")); err != nil || len(res) != 3 {
				t.Fatalf("AcquireMany = %+v, %v", res, err)
			}
			// The creating multi, the deleting one, and the listing and
			// read of the holder's node for HolderTTL.
			if ops, total := do.since(s); try > 0 && (ops[opMulti] != 2 || ops[opChildren2] != 1 || ops[opGetData] != 1 || total != 4) {
				t.Errorf("a refused AcquireMany sent %v; want 2 multis, a listing and a read", ops)
			}
		}
		for i, r := range res {
			if r.Acquired {
				t.Errorf("key %d granted beside the zk.Lock holder", i)
			}
			if busy := i == 1; busy != (r.HolderTTL > 0) {
				t.Errorf("key %d: HolderTTL %v; want > 0 only for the zk.Lock's key", i, r.HolderTTL)
			}
		}
		for _, k := range []string{"zl/a", "zl/c"} {
			if names := kids(k); len(names) != 0 {
				t.Errorf("children of %q after the refusal = %v; want none", k, names)
			}
		}
		if names := kids("zl/b"); len(names) != 1 {
			t.Errorf("children of the zk.Lock's key = %v; want its node alone", names)
		}
		if err := zl.Unlock(); err != nil {
			t.Fatal(err)
		}
	})

	// BriefNodes: refused calls' nodes, which exist between their two
	// multis, hold up a zk.Lock and a dlock waiter of a key in the call at
	// most briefly: each is woken by the node's delete.
	t.Run("BriefNodes", func(t *testing.T) {
		zl := zk.NewLock(conn, Path(base, "brief/held"), zk.WorldACL(zk.PermAll))
		wantGranted(t, lockZK(zl, "holder"), "zk.Lock on a free key")
		defer zl.Unlock()
		stop := make(chan struct{})
		refused := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					refused <- nil
					return
				default:
				}
				res, err := d.AcquireMany(ctx, reqs("brief/free", "brief/held"))
				if err == nil && (res[0].Acquired || res[1].Acquired) {
					err = fmt.Errorf("granted %+v beside the holder", res)
				}
				if err != nil {
					refused <- err
					return
				}
			}
		}()
		c := openClient(t, "zk://"+z.Addr()+base)
		other := zk.NewLock(connect(t, z.Addrs(), 10*time.Second, nil), Path(base, "brief/free"), zk.WorldACL(zk.PermAll))
		lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		for i := range 30 {
			wantGranted(t, lockZK(other, "zk"), fmt.Sprintf("zk.Lock %d of a key refused calls touch", i))
			if err := other.Unlock(); err != nil {
				t.Fatal(err)
			}
			l, err := c.Lock(lctx, "brief/free")
			if err != nil {
				t.Fatalf("dlock Lock %d of a key refused calls touch: %v", i, err)
			}
			if err := l.Unlock(lctx); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		if err := <-refused; err != nil {
			t.Fatalf("AcquireMany beside the holder: %v", err)
		}
	})

	t.Run("Unsupported", func(t *testing.T) {
		if _, err := conn.Create(Path(base, "nowrite"), nil, zk.FlagPersistent, zk.WorldACL(zk.PermCreate|zk.PermRead|zk.PermDelete)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.AcquireMany(ctx, reqs("w/a", "nowrite")); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("AcquireMany with a key node that may not be written = %v, want ErrUnsupported", err)
		}
		long := make([]string, 300)
		for i := range long {
			long[i] = fmt.Sprintf("%d/%s", i, strings.Repeat("k", 900))
		}
		if _, err := d.AcquireMany(ctx, reqs(long...)); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("AcquireMany of 300 long keys = %v, want ErrUnsupported", err)
		}
		for _, k := range []string{"w/a", "nowrite", long[0]} {
			if names := kids(k); len(names) != 0 {
				t.Errorf("children of %.20q after the refusal = %v; want none", k, names)
			}
		}
		c := dlock.NewClient(d)
		set, err := c.LockMany(ctx, []string{"w/a", "nowrite"}, dlock.WithTTL(5*time.Second))
		if err != nil {
			t.Fatalf("LockMany one by one: %v", err)
		}
		if err := set.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
