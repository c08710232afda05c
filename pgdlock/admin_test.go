package pgdlock

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

func TestAdmin(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	openDriver := func(t *testing.T, url string) driver.Locker {
		t.Helper()
		u, err := driver.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		d, err := OpenURL(ctx, u)
		if err != nil {
			t.Fatalf("open %s: %v", url, err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}

	t.Run("list is bytewise", func(t *testing.T) {
		url := pg.URL() + "&table=admin_list"
		c := openClient(t, ctx, url)
		other := openClient(t, ctx, pg.URL()+"&table=admin_other")
		keys := []string{"a", "A", "a ", "a\t", "a\x00", "a\x00b", "ab", "aB", "a%", "a_", "a*", "a[", `a\`, "caf\u00e9", "cafe\u0301", "b"}
		for _, k := range keys {
			if _, err := c.TryLock(ctx, k, dlock.WithTTL(time.Minute), dlock.WithMetadata("m="+strings.ReplaceAll(k, "\x00", "0"))); err != nil {
				t.Fatalf("TryLock(%q): %v", k, err)
			}
		}
		if _, err := other.TryLock(ctx, "a-other-table", dlock.WithTTL(time.Minute)); err != nil {
			t.Fatal(err)
		}
		// Ran out on the server's clock; its row still names a token.
		if _, err := c.TryLock(ctx, "a-expired", dlock.WithTTL(20*time.Millisecond), dlock.WithAutoRefresh(false)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		poll := openClient(t, ctx, url+"&notify=false") // pollOnly keeps List
		for _, prefix := range []string{"", "a", "A", "a ", "a\x00", "a%", "a_", "a*", "a[", `a\`, "caf", "cafe", "none"} {
			var want []string
			for _, k := range keys {
				if strings.HasPrefix(k, prefix) {
					want = append(want, k)
				}
			}
			slices.Sort(want)
			for _, lc := range []*dlock.Client{c, poll} {
				infos, err := lc.List(ctx, prefix)
				if err != nil {
					t.Fatalf("List(%q): %v", prefix, err)
				}
				var got []string
				for _, in := range infos {
					got = append(got, in.Key)
					if meta := "m=" + strings.ReplaceAll(in.Key, "\x00", "0"); !in.Held || in.Metadata != meta || in.TTL <= 0 || in.TTL > time.Minute || in.Fence == 0 {
						t.Errorf("List(%q): %q = %+v, want held, metadata %q, fence > 0, 0 < TTL <= 1m", prefix, in.Key, in, meta)
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("List(%q) = %q, want %q", prefix, got, want)
				}
			}
		}
	})

	t.Run("force release wakes a waiter", func(t *testing.T) {
		// The holder's lease and the waiter's backoff are an hour: only
		// the notification can wake the waiter within its deadline.
		a, op, w := openClient(t, ctx, pg.URL()), openClient(t, ctx, pg.URL()), openClient(t, ctx, pg.URL())
		drivertest.CheckForceUnlockWakes(ctx, t, a, op, w, "wake", 300*time.Millisecond)
	})

	t.Run("force release waits for a write in flight", func(t *testing.T) {
		// Another transaction changes the row while ForceRelease runs:
		// ForceRelease waits for it, then frees (or not) what is there
		// after its commit, never the holder it replaced.
		admin, err := pgx.Connect(ctx, pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(ctx)
		d := openDriver(t, pg.URL())
		fr := d.(driver.ForceReleaser)
		for _, tc := range []struct {
			name   string
			change string
			want   driver.Info // Held, Fence offset from the first grant, Metadata
		}{
			{"released", `UPDATE dlock_locks SET token = '', expires_at = clock_timestamp(), metadata = '' WHERE "key" = $1`, driver.Info{}},
			{"taken by another", `UPDATE dlock_locks SET token = 'other', fence = fence + 1, metadata = 'm2' WHERE "key" = $1`, driver.Info{Held: true, Fence: 1, Metadata: "m2"}},
		} {
			key := "inflight-" + tc.name
			r, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t1", TTL: time.Minute, Metadata: "m1"})
			if err != nil || !r.Acquired {
				t.Fatalf("%s: Acquire = %+v, %v", tc.name, r, err)
			}
			tx, err := admin.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, tc.change, []byte(key)); err != nil {
				t.Fatal(err)
			}
			type result struct {
				in  driver.Info
				err error
			}
			done := make(chan result, 1)
			go func() {
				in, err := fr.ForceRelease(ctx, key)
				done <- result{in, err}
			}()
			select {
			case r := <-done:
				t.Fatalf("%s: ForceRelease = %+v, %v while another transaction holds the row; want it to wait", tc.name, r.in, r.err)
			case <-time.After(300 * time.Millisecond):
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: ForceRelease still waiting 10 s after the other transaction committed", tc.name)
			}
			want := tc.want
			want.Fence += r.Fence
			if res.err != nil || res.in.Held != want.Held || res.in.Fence != want.Fence || res.in.Metadata != want.Metadata {
				t.Errorf("%s: ForceRelease = %+v, %v; want %+v", tc.name, res.in, res.err, want)
			}
			if in, err := d.Inspect(ctx, key); err != nil || in.Held {
				t.Errorf("%s: Inspect after ForceRelease = %+v, %v; want not held", tc.name, in, err)
			}
		}
	})

	for _, notify := range []bool{true, false} {
		name := map[bool]string{true: "driver contract", false: "driver contract without notifications"}[notify]
		t.Run(name, func(t *testing.T) {
			url := pg.URL() + "&table=admin_contract"
			if !notify {
				url += "&notify=false"
			}
			testForceReleaseDriver(t, ctx, openDriver(t, url), "notify="+map[bool]string{true: "on", false: "off"}[notify]+"/")
		})
	}
}

// testForceReleaseDriver checks the driver's contract directly: the freed
// holder's Refresh, RefreshBatch and Release all say ErrNotHeld, the fence
// survives and increases, and a free key gives Held false.
func testForceReleaseDriver(t *testing.T, ctx context.Context, d driver.Locker, prefix string) {
	t.Helper()
	fr, ok := d.(driver.ForceReleaser)
	if !ok {
		t.Fatalf("%T does not implement driver.ForceReleaser", d)
	}
	key := prefix + "k"
	r, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t1", TTL: time.Minute, Metadata: "m1"})
	if err != nil || !r.Acquired {
		t.Fatalf("Acquire = %+v, %v", r, err)
	}
	in, err := fr.ForceRelease(ctx, key)
	if err != nil || !in.Held || in.Fence != r.Fence || in.Metadata != "m1" || in.TTL <= 0 || in.TTL > time.Minute {
		t.Fatalf("ForceRelease = %+v, %v; want held, fence %d, metadata m1, 0 < TTL <= 1m", in, err, r.Fence)
	}
	if err := d.Refresh(ctx, key, "t1", time.Minute); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("the freed holder's Refresh = %v, want ErrNotHeld", err)
	}
	errs := d.(driver.BatchRefresher).RefreshBatch(ctx, []driver.RefreshRequest{{Key: key, Token: "t1", TTL: time.Minute}})
	if len(errs) != 1 || !errors.Is(errs[0], driver.ErrNotHeld) {
		t.Errorf("the freed holder's RefreshBatch = %v, want [ErrNotHeld]", errs)
	}
	if err := d.Release(ctx, key, "t1"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("the freed holder's Release = %v, want ErrNotHeld", err)
	}
	in, err = fr.ForceRelease(ctx, key)
	if err != nil || in.Held || in.Fence != r.Fence {
		t.Errorf("ForceRelease of a free key = %+v, %v; want not held, fence %d, nil", in, err, r.Fence)
	}
	in, err = fr.ForceRelease(ctx, prefix+"never-taken")
	if err != nil || in.Held || in.Fence != 0 {
		t.Errorf("ForceRelease of a key never taken = %+v, %v; want not held, fence 0, nil", in, err)
	}
	r2, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t2", TTL: time.Minute})
	if err != nil || !r2.Acquired || r2.Fence <= r.Fence {
		t.Fatalf("Acquire after ForceRelease = %+v, %v; want acquired with fence above %d", r2, err, r.Fence)
	}
	if err := d.Refresh(ctx, key, "t2", time.Minute); err != nil {
		t.Errorf("the new holder's Refresh: %v", err)
	}
}
