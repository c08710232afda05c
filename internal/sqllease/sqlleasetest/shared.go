package sqlleasetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
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

// RunSharedRace has the goroutines of several drivers on one backend race
// for one key, each attempt at random exclusive or one of 2 shared grants
// (some exclusive attempts as waiting writers), and checks that no grant
// ever overlapped one it excludes: an exclusive holder alone, at most 2
// shared ones. Every attempt is bounded; the test takes about a second.
func RunSharedRace(t *testing.T, ctx context.Context, drivers []driver.Locker, key string) {
	t.Helper()
	const (
		limit = 2
		tries = 40
	)
	var (
		mu           sync.Mutex
		excl, shared int
		grants       [2]int
		bad          string
	)
	enter := func(exclusive bool) {
		mu.Lock()
		defer mu.Unlock()
		if exclusive {
			excl++
			grants[0]++
		} else {
			shared++
			grants[1]++
		}
		if bad == "" && (excl > 1 || (excl == 1 && shared > 0) || shared > limit) {
			bad = fmt.Sprintf("%d exclusive and %d shared grants at once", excl, shared)
		}
	}
	leave := func(exclusive bool) {
		mu.Lock()
		defer mu.Unlock()
		if exclusive {
			excl--
		} else {
			shared--
		}
	}
	var wg sync.WaitGroup
	for i, d := range drivers {
		sl := d.(driver.SharedLocker)
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
				for n := range tries {
					token := fmt.Sprintf("t%d-%d-%d", i, g, n)
					req := driver.Request{Key: key, Token: token, TTL: 10 * time.Second}
					exclusive := rng.IntN(3) == 0
					var (
						res driver.Result
						err error
					)
					if exclusive {
						req.Hints.Wait = rng.IntN(2) == 0
						res, err = d.Acquire(ctx, req)
					} else {
						res, err = sl.AcquireShared(ctx, driver.SharedRequest{Request: req, Limit: limit})
					}
					if err != nil {
						t.Errorf("attempt: %v", err)
						return
					}
					if !res.Acquired {
						if res.WriterWaiting {
							_ = d.Release(ctx, key, token)
						}
						time.Sleep(time.Millisecond)
						continue
					}
					enter(exclusive)
					time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
					leave(exclusive)
					if err := d.Release(ctx, key, token); err != nil {
						t.Errorf("Release: %v", err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if bad != "" {
		t.Fatal(bad)
	}
	if grants[0] == 0 || grants[1] == 0 {
		t.Errorf("grants: %d exclusive, %d shared; want some of each", grants[0], grants[1])
	}
	h, err := drivers[0].(driver.SharedLocker).Holders(ctx, key)
	if err != nil || len(h.Holders) != 0 || h.WritersWaiting != 0 {
		t.Errorf("Holders after the race = %+v, %v; want nothing left", h, err)
	}
}
