package dlockotel_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/dlockotel"
	"github.com/dlock-go/dlock/internal/testserver"
	_ "github.com/dlock-go/dlock/redisdlock"
)

// collected reads everything reader has, by instrument name.
func collected(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != dlockotel.ScopeName {
			t.Errorf("scope %q, want %q", sm.Scope.Name, dlockotel.ScopeName)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// attrs is an attribute set of the given key/values.
func attrs(kv ...string) attribute.Set {
	var list []attribute.KeyValue
	for i := 0; i+1 < len(kv); i += 2 {
		list = append(list, attribute.String(kv[i], kv[i+1]))
	}
	return attribute.NewSet(list...)
}

// sum is the value of a counter or up-down counter's point with set.
func sum(t *testing.T, data map[string]metricdata.Aggregation, name string, set attribute.Set) int64 {
	t.Helper()
	if data[name] == nil {
		return 0 // nothing recorded yet
	}
	s, ok := data[name].(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s: %T, want an int64 sum", name, data[name])
	}
	for _, p := range s.DataPoints {
		if p.Attributes.Equals(&set) {
			return p.Value
		}
	}
	return 0
}

// histCount is the number of measurements of a histogram's point with set.
func histCount(t *testing.T, data map[string]metricdata.Aggregation, name string, set attribute.Set) (uint64, float64) {
	t.Helper()
	h, ok := data[name].(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: %T, want a float64 histogram", name, data[name])
	}
	for _, p := range h.DataPoints {
		if p.Attributes.Equals(&set) {
			return p.Count, p.Sum
		}
	}
	return 0, 0
}

// TestMetrics: a run against a real Redis produces exact counts in every
// instrument, with the backend and operation attributes and no key.
func TestMetrics(t *testing.T) {
	srv := testserver.StartRedis(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := dlockotel.NewMetrics(dlockotel.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	open := func() *dlock.Client {
		c, err := dlock.Open(ctx, srv.URL(), m.Option())
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := open(), open()

	la, err := a.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	if _, err := b.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock of a held key = %v", err)
	}
	data := collected(t, reader)
	held := attrs("dlock.backend", "redis", "dlock.operation", "try_lock")
	if got := sum(t, data, "dlock.locks.held", held); got != 1 {
		t.Errorf("locks held = %d, want 1", got)
	}
	// b waits; a's release lets it in.
	granted := make(chan *dlock.Lock, 1)
	go func() {
		l, err := b.Lock(ctx, "k")
		if err != nil {
			t.Errorf("Lock: %v", err)
		}
		granted <- l
	}()
	deadline := time.Now().Add(10 * time.Second)
	for sum(t, collected(t, reader), "dlock.waiters", attrs("dlock.backend", "redis", "dlock.operation", "lock")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the waiting Lock is not counted in dlock.waiters")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if err := la.Refresh(ctx, 0); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	lb := <-granted
	// A Lock whose ctx ends while b holds the key.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = a.Lock(short, "k")
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with a short ctx = %v", err)
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	// A lock lost: no refresh, a short TTL.
	lost, err := a.TryLock(ctx, "gone", dlock.WithTTL(100*time.Millisecond), dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	<-lost.Done()
	// A permit of a semaphore.
	p, err := a.Semaphore("sem", 2).Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	_ = p.Unlock(ctx)
	// A guard refusing a stale write.
	var g dlock.FenceGuard
	m.ObserveGuard(&g)
	_ = g.Admit("k", 5)
	if err := g.Admit("k", 3); !errors.Is(err, dlock.ErrStaleFence) {
		t.Fatalf("Admit of a stale fence = %v", err)
	}

	data = collected(t, reader)
	op := func(op string, kv ...string) attribute.Set {
		return attrs(append([]string{"dlock.backend", "redis", "dlock.operation", op}, kv...)...)
	}
	for _, c := range []struct {
		name string
		set  attribute.Set
		want int64
	}{
		{"dlock.acquisitions", op("try_lock", "dlock.outcome", "granted"), 2},
		{"dlock.acquisitions", op("try_lock", "dlock.outcome", "not_acquired"), 1},
		{"dlock.acquisitions", op("lock", "dlock.outcome", "granted"), 1},
		{"dlock.acquisitions", op("lock", "dlock.outcome", "canceled"), 1},
		{"dlock.acquisitions", op("acquire", "dlock.outcome", "granted"), 1},
		{"dlock.locks.held", op("try_lock"), 0},
		{"dlock.locks.held", op("lock"), 0},
		{"dlock.locks.held", op("acquire"), 0},
		{"dlock.waiters", op("lock"), 0},
		{"dlock.refreshes", op("try_lock", "dlock.outcome", "ok"), 1},
		{"dlock.losses", op("try_lock", "dlock.loss.cause", "expired"), 1},
		{"dlock.fence.rejections", attrs(), 1},
	} {
		if got := sum(t, data, c.name, c.set); got != c.want {
			t.Errorf("%s%v = %d, want %d", c.name, c.set.ToSlice(), got, c.want)
		}
	}
	if n, _ := histCount(t, data, "dlock.acquire.duration", op("try_lock")); n != 2 {
		t.Errorf("acquire.duration of try_lock: %d measurements, want 2", n)
	}
	n, s := histCount(t, data, "dlock.acquire.duration", op("lock"))
	if n != 1 || s < 0.02 {
		t.Errorf("acquire.duration of the waiting lock: %d measurements summing %.3fs; want 1, at least the 20 ms it waited", n, s)
	}
	if n, _ := histCount(t, data, "dlock.hold.duration", op("try_lock", "dlock.outcome", "released")); n != 1 {
		t.Errorf("hold.duration released try_lock: %d, want 1", n)
	}
	if n, s := histCount(t, data, "dlock.hold.duration", op("try_lock", "dlock.outcome", "lost")); n != 1 || s < 0.05 || s > 1 {
		t.Errorf("hold.duration lost: %d measurements summing %.3fs, want 1 of about the 100 ms TTL (less the drift allowance)", n, s)
	}
}

// TestKeyAttribute: WithKeyAttribute adds the mapped key, and leaves it
// out where the mapping gives "".
func TestKeyAttribute(t *testing.T) {
	srv := testserver.StartRedis(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	m, err := dlockotel.NewMetrics(dlockotel.WithMeterProvider(mp), dlockotel.WithKeyAttribute(func(key string) string {
		if prefix, _, ok := strings.Cut(key, "/"); ok {
			return prefix + "/*"
		}
		return ""
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := dlock.Open(ctx, srv.URL(), m.Option())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, key := range []string{"invoice/1", "invoice/2", "plain"} {
		l, err := c.TryLock(ctx, key)
		if err != nil {
			t.Fatalf("TryLock(%s): %v", key, err)
		}
		_ = l.Unlock(ctx)
	}
	data := collected(t, reader)
	granted := func(kv ...string) attribute.Set {
		return attrs(append([]string{"dlock.backend", "redis", "dlock.operation", "try_lock", "dlock.outcome", "granted"}, kv...)...)
	}
	if got := sum(t, data, "dlock.acquisitions", granted("dlock.key", "invoice/*")); got != 2 {
		t.Errorf("acquisitions of invoice/* = %d, want 2", got)
	}
	if got := sum(t, data, "dlock.acquisitions", granted()); got != 1 {
		t.Errorf("acquisitions without a key attribute = %d, want 1 (plain)", got)
	}
}
