package sqlitedlock_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/sqllease/sqlleasetest"
	"github.com/dlock-go/dlock/sqlitedlock"
)

// TestListBytewise checks List's order and prefix match byte for byte on
// keys SQLite could fold or match as patterns (case, trailing spaces, NUL,
// LIKE and GLOB characters), and that it leaves out another table's keys
// and a lease that ran out without a release.
func TestListBytewise(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "locks.db")
	c := openClient(t, "sqlite://"+path)
	other := openClient(t, "sqlite://"+path+"?table=other_locks")
	keys := []string{"a", "A", "a ", "a\t", "a\x00", "a\x00b", "ab", "aB", "a%", "a_", "a*", "a[", "caf\u00e9", "cafe\u0301", "b"}
	for _, k := range keys {
		if _, err := c.TryLock(ctx, k, dlock.WithTTL(time.Minute), dlock.WithMetadata("m="+k)); err != nil {
			t.Fatalf("TryLock(%q): %v", k, err)
		}
	}
	if _, err := other.TryLock(ctx, "a-other-table", dlock.WithTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Ran out on the engine's clock; its row still says held by a token.
	if _, err := c.TryLock(ctx, "a-expired", dlock.WithTTL(20*time.Millisecond), dlock.WithAutoRefresh(false)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)

	for _, prefix := range []string{"", "a", "A", "a ", "a\x00", "a%", "a_", "a*", "a[", "caf", "cafe", "none"} {
		var want []string
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		infos, err := c.List(ctx, prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		var got []string
		for _, in := range infos {
			got = append(got, in.Key)
			if !in.Held || in.Metadata != "m="+in.Key || in.TTL <= 0 || in.TTL > time.Minute || in.Fence == 0 {
				t.Errorf("List(%q): %q = %+v, want held, metadata %q, fence > 0, 0 < TTL <= 1m", prefix, in.Key, in, "m="+in.Key)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("List(%q) = %q, want %q", prefix, got, want)
		}
	}
}

// TestForceReleaseWakesWaiter checks that ForceUnlock wakes a waiter of
// another client of the same file at once: the holder's lease and the
// waiter's backoff are both an hour, so only the notification can wake it
// within the deadline.
func TestForceReleaseWakesWaiter(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "locks.db")
	a, op, w := openClient(t, "sqlite://"+path), openClient(t, "sqlite://"+path), openClient(t, "sqlite://"+path)
	drivertest.CheckForceUnlockWakes(ctx, t, a, op, w, "k", 100*time.Millisecond)
}

// TestForceReleaseDriver checks the driver's contract directly: the
// freed holder's Refresh, RefreshBatch and Release all say ErrNotHeld,
// the fence survives and increases, and a free key gives Held false.
func TestForceReleaseDriver(t *testing.T) {
	ctx := testCtx(t)
	d, err := sqlitedlock.OpenDriver(ctx, filepath.Join(t.TempDir(), "locks.db"), sqlitedlock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	testForceReleaseDriver(t, ctx, d)
}

func testForceReleaseDriver(t *testing.T, ctx context.Context, d driver.Locker) {
	t.Helper()
	fr := d.(driver.ForceReleaser)
	r, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "t1", TTL: time.Minute, Metadata: "m1"})
	if err != nil || !r.Acquired {
		t.Fatalf("Acquire = %+v, %v", r, err)
	}
	in, err := fr.ForceRelease(ctx, "k")
	if err != nil || !in.Held || in.Fence != r.Fence || in.Metadata != "m1" || in.TTL <= 0 || in.TTL > time.Minute {
		t.Fatalf("ForceRelease = %+v, %v; want held, fence %d, metadata m1, 0 < TTL <= 1m", in, err, r.Fence)
	}
	if err := d.Refresh(ctx, "k", "t1", time.Minute); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("the freed holder's Refresh = %v, want ErrNotHeld", err)
	}
	br := d.(driver.BatchRefresher)
	errs := br.RefreshBatch(ctx, []driver.RefreshRequest{{Key: "k", Token: "t1", TTL: time.Minute}})
	if len(errs) != 1 || !errors.Is(errs[0], driver.ErrNotHeld) {
		t.Errorf("the freed holder's RefreshBatch = %v, want [ErrNotHeld]", errs)
	}
	if err := d.Release(ctx, "k", "t1"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("the freed holder's Release = %v, want ErrNotHeld", err)
	}
	in, err = fr.ForceRelease(ctx, "k")
	if err != nil || in.Held || in.Fence != r.Fence {
		t.Errorf("ForceRelease of a free key = %+v, %v; want not held, fence %d, nil", in, err, r.Fence)
	}
	in, err = fr.ForceRelease(ctx, "never-taken")
	if err != nil || in.Held || in.Fence != 0 {
		t.Errorf("ForceRelease of a key never taken = %+v, %v; want not held, fence 0, nil", in, err)
	}
	r2, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "t2", TTL: time.Minute})
	if err != nil || !r2.Acquired || r2.Fence <= r.Fence {
		t.Fatalf("Acquire after ForceRelease = %+v, %v; want acquired with fence above %d", r2, err, r.Fence)
	}
	if err := d.Refresh(ctx, "k", "t2", time.Minute); err != nil {
		t.Errorf("the new holder's Refresh: %v", err)
	}
}

// TestSharedAdmin: RefreshBatch, List and ForceRelease with shared grants.
func TestSharedAdmin(t *testing.T) {
	ctx := testCtx(t)
	d, err := sqlitedlock.OpenDriver(ctx, filepath.Join(t.TempDir(), "locks.db"), sqlitedlock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sqlleasetest.RunSharedAdminTest(t, ctx, d, "adm/")
}

// TestSharedRace: drivers with their own connections to one file never
// grant beside what they exclude.
func TestSharedRace(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "race.db")
	var ds []driver.Locker
	for range 3 {
		d, err := sqlitedlock.OpenDriver(ctx, path, sqlitedlock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ds = append(ds, d)
	}
	sqlleasetest.RunSharedRace(t, ctx, ds, "race")
}
