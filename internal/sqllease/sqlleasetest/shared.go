package sqlleasetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// RunSharedAdminTest checks what the conformance suite leaves to each SQL
// driver for its shared grants (driver.SharedLocker), on a driver d that
// is also a Lister, ForceReleaser and BatchRefresher, with keys under
// prefix: RefreshBatch refreshes exclusive and shared grants together and
// refuses a foreign token; List reports a key with shared grants with the
// newest fence and metadata; ForceRelease frees every shared grant and
// waiting writer of a key, keeps the fence counter, and a freed grant can
// no longer be refreshed.
func RunSharedAdminTest(t *testing.T, ctx context.Context, d driver.Locker, prefix string) {
	t.Helper()
	sl := d.(driver.SharedLocker)
	const ttl = 10 * time.Second
	shared, excl := prefix+"shared", prefix+"excl"
	share := func(token, meta string) driver.Result {
		t.Helper()
		res, err := sl.AcquireShared(ctx, driver.SharedRequest{Request: driver.Request{Key: shared, Token: token, TTL: ttl, Metadata: meta}, Limit: 3})
		if err != nil || !res.Acquired {
			t.Fatalf("AcquireShared(%s) = %+v, %v", token, res, err)
		}
		return res
	}
	a, b := share("a", "first"), share("b", "second")
	x, err := d.Acquire(ctx, driver.Request{Key: excl, Token: "x", TTL: ttl, Metadata: "excl"})
	if err != nil || !x.Acquired {
		t.Fatalf("Acquire = %+v, %v", x, err)
	}
	errs := d.(driver.BatchRefresher).RefreshBatch(ctx, []driver.RefreshRequest{
		{Key: shared, Token: "a", TTL: ttl}, {Key: excl, Token: "x", TTL: ttl},
		{Key: shared, Token: "nobody", TTL: ttl}, {Key: shared, Token: "b", TTL: ttl},
	})
	for i, want := range []error{nil, nil, driver.ErrNotHeld, nil} {
		if (want == nil) != (errs[i] == nil) || (want != nil && !errors.Is(errs[i], want)) {
			t.Errorf("RefreshBatch error %d = %v, want %v", i, errs[i], want)
		}
	}
	list, err := d.(driver.Lister).List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Key != excl || list[1].Key != shared {
		t.Fatalf("List = %+v, want %s and %s", list, excl, shared)
	}
	if in := list[1]; !in.Held || in.Fence != b.Fence || in.Metadata != "second" || in.TTL <= ttl/2 {
		t.Errorf("List entry of the shared key = %+v, want held with fence %d, metadata %q", in, b.Fence, "second")
	}
	// A waiting writer, then the operator frees the key.
	w, err := d.Acquire(ctx, driver.Request{Key: shared, Token: "w", TTL: ttl, Hints: driver.Hints{Wait: true}})
	if err != nil || w.Acquired || !w.WriterWaiting {
		t.Fatalf("waiting writer's Acquire = %+v, %v", w, err)
	}
	in, err := d.(driver.ForceReleaser).ForceRelease(ctx, shared)
	if err != nil || !in.Held || in.Fence != b.Fence || in.Metadata != "second" {
		t.Fatalf("ForceRelease = %+v, %v; want what was held: fence %d", in, err, b.Fence)
	}
	if h, err := sl.Holders(ctx, shared); err != nil || len(h.Holders) != 0 || h.WritersWaiting != 0 {
		t.Errorf("Holders after ForceRelease = %+v, %v; want nothing", h, err)
	}
	for _, tok := range []string{"a", "b"} {
		if err := d.Refresh(ctx, shared, tok, ttl); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("Refresh of %s's freed grant = %v, want ErrNotHeld", tok, err)
		}
	}
	if in, err := d.Inspect(ctx, shared); err != nil || in.Held || in.Fence < b.Fence {
		t.Errorf("Inspect after ForceRelease = %+v, %v; want free, fence counter kept", in, err)
	}
	c := share("c", "third")
	if c.Fence <= b.Fence || a.Fence >= b.Fence {
		t.Errorf("fences %d, %d, then %d after ForceRelease; want increasing", a.Fence, b.Fence, c.Fence)
	}
	if in, err := d.(driver.ForceReleaser).ForceRelease(ctx, excl); err != nil || !in.Held || in.Fence != x.Fence {
		t.Errorf("ForceRelease of the exclusive key = %+v, %v", in, err)
	}
	if err := d.Release(ctx, shared, "c"); err != nil {
		t.Errorf("Release of c: %v", err)
	}
}
