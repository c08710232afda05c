package etcddlock

import (
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestAcquireMany: the compare AcquireMany (and Acquire) make holds over
// an empty range and fails over a non-empty one; a key held by a
// concurrency.Mutex refuses the whole call, leaving nothing on the others,
// with the Mutex's lease TTL as HolderTTL; granted keys have exactly the
// entries Acquire writes (the name of a lease of their own, the metadata),
// which a concurrency.Mutex waits for; more keys than one transaction may
// compare, by the driver's count or by the server's, are refused with an
// error wrapping errors.ErrUnsupported, writing nothing.
func TestAcquireMany(t *testing.T) {
	srv := testserver.StartEtcd(t)
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 60*time.Second)
	d := ownDriver(t, ctx, "etcd://"+srv.Addr())
	count := func(pfx string) int64 {
		t.Helper()
		resp, err := raw.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	reqs := func(n int, prefix string) []driver.Request {
		r := make([]driver.Request, n)
		for i := range r {
			r[i] = driver.Request{Key: fmt.Sprintf("%s/%d", prefix, i), Token: fmt.Sprint("t", i), TTL: 5 * time.Second, Metadata: "m"}
		}
		return r
	}

	t.Run("EmptyRangeCompare", func(t *testing.T) {
		empty := clientv3.Compare(clientv3.CreateRevision("/probe/q/"), "=", 0).WithPrefix()
		resp, err := raw.Txn(ctx).If(empty).Commit()
		if err != nil || !resp.Succeeded {
			t.Fatalf("compare over an empty range = %v, %v; want true", resp, err)
		}
		if _, err := raw.Put(ctx, "/probe/q/x", ""); err != nil {
			t.Fatal(err)
		}
		if resp, err = raw.Txn(ctx).If(empty).Commit(); err != nil || resp.Succeeded {
			t.Fatalf("compare over a range with a key = %v, %v; want false", resp, err)
		}
	})

	t.Run("MutexHolder", func(t *testing.T) {
		rs := reqs(3, "many/mutex")
		m := concurrency.NewMutex(newSession(t, raw), "/dlock/many%2Fmutex%2F1")
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := d.AcquireMany(ctx, rs)
		if err != nil || len(res) != 3 {
			t.Fatalf("AcquireMany = %+v, %v", res, err)
		}
		for i, r := range res {
			if r.Acquired {
				t.Errorf("%q granted beside the Mutex holder", rs[i].Key)
			}
			if busy := i == 1; busy != (r.HolderTTL > 0) {
				t.Errorf("%q: HolderTTL %v; want > 0 only for the Mutex's key", rs[i].Key, r.HolderTTL)
			}
		}
		for _, i := range []int{0, 2} {
			if n := count("/dlock/many%2Fmutex%2F" + fmt.Sprint(i) + "/"); n != 0 {
				t.Errorf("%d entries left under %q", n, rs[i].Key)
			}
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Layout", func(t *testing.T) {
		rs := reqs(2, "many/layout")
		res, err := d.AcquireMany(ctx, rs)
		if err != nil || len(res) != 2 || !res[0].Acquired || !res[1].Acquired {
			t.Fatalf("AcquireMany = %+v, %v; want both granted", res, err)
		}
		var leases [2]int64
		for i, r := range rs {
			pfx := "/dlock/many%2Flayout%2F" + fmt.Sprint(i)
			resp, err := raw.Get(ctx, pfx+"/", clientv3.WithPrefix())
			if err != nil || len(resp.Kvs) != 1 {
				t.Fatalf("entries of %q = %v, %v; want one", r.Key, resp, err)
			}
			kv := resp.Kvs[0]
			leases[i] = kv.Lease
			if string(kv.Key) != entryName(pfx, clientv3.LeaseID(kv.Lease)) || string(kv.Value) != "m" || uint64(kv.CreateRevision) != res[i].Fence {
				t.Errorf("entry %q = %q, create revision %d; want %s/<its lease>, the metadata, fence %d", kv.Key, kv.Value, kv.CreateRevision, pfx, res[i].Fence)
			}
			m := concurrency.NewMutex(newSession(t, raw), pfx)
			if err := m.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
				t.Errorf("concurrency.Mutex.TryLock of a key AcquireMany took = %v, want ErrLocked", err)
			}
		}
		if leases[0] == leases[1] {
			t.Error("two keys of AcquireMany on one lease; want a lease of its own each")
		}
		for _, r := range rs {
			if err := d.Release(ctx, r.Key, r.Token); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("TooMany", func(t *testing.T) {
		defer d.txnOps.Store(defaultTxnOps)
		d.txnOps.Store(2)
		if _, err := d.AcquireMany(ctx, reqs(3, "many/driver")); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("AcquireMany of 3 keys with 2 compares allowed = %v, want ErrUnsupported", err)
		}
		// The server's limit (its default, 128) below the driver's.
		d.txnOps.Store(1000)
		if _, err := d.AcquireMany(ctx, reqs(200, "many/server")); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("AcquireMany of 200 keys = %v, want ErrUnsupported", err)
		}
		if n := count("/dlock/many%2Fdriver") + count("/dlock/many%2Fserver"); n != 0 {
			t.Errorf("%d entries written by refused calls, want none", n)
		}
	})
}

// TestLockManyRoundTrips: LockMany of free keys is one transaction for all
// of them, on leases from the pool (an ordered TryLock per key would be one
// transaction each).
func TestLockManyRoundTrips(t *testing.T) {
	srv := testserver.StartEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	c, counter := countedClient(t, srv)
	keys := []string{"rt/a", "rt/b", "rt/c"}
	opts := []dlock.LockOption{dlock.WithTTL(10 * time.Second), dlock.WithAutoRefresh(false)}
	for round := range 3 {
		_, _, before := counter.snapshot()
		set, err := c.LockMany(ctx, keys, opts...)
		if err != nil {
			t.Fatal(err)
		}
		_, _, after := counter.snapshot()
		calls := diff(after, before)
		if round > 0 && (calls["Txn"] != 1 || calls["LeaseGrant"] != 0) {
			// The first round grants the leases the pool then serves.
			t.Errorf("round %d: LockMany of %d free keys made %v; want one Txn and no LeaseGrant", round, len(keys), calls)
		}
		if err := set.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
