package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
)

// fullDriver is a memdlock driver with a Queuer too, so that every optional
// interface can be present in the inner drivers below. Its AcquireQueued
// is a one-shot Acquire: enough for the wrapper's forwarding test.
type fullDriver struct {
	driver.Locker
	driver.Notifier
	driver.BatchRefresher
	driver.Lister
	driver.ForceReleaser
}

func (q fullDriver) AcquireQueued(ctx context.Context, req driver.Request) (driver.Result, error) {
	res, err := q.Acquire(ctx, req)
	if err == nil && res.Acquired {
		res.ValidUntil = time.Now().Add(req.TTL / 2)
	}
	return res, err
}

// TestCountRefreshesKeepsInterfaces: for each of the 32 combinations of
// optional interfaces an inner driver may have, the wrapper has exactly
// that combination, forwards their calls, and counts refreshes.
func TestCountRefreshesKeepsInterfaces(t *testing.T) {
	ctx := t.Context()
	md := memdlock.NewStore().Driver()
	b := md.(driver.BatchRefresher)
	full := fullDriver{md, md.(driver.Notifier), b, md.(driver.Lister), md.(driver.ForceReleaser)}
	if got := optionalMask(full); got != 31 {
		t.Fatalf("optionalMask(memdlock + AcquireQueued) = %b, want 11111", got)
	}
	for mask := range 32 {
		inner := withOptional(md, full, b, mask)
		if got := optionalMask(inner); got != mask {
			t.Fatalf("inner for mask %05b implements %05b", mask, got)
		}
		d, counts := CountRefreshes(inner)
		if got := optionalMask(d); got != mask {
			t.Errorf("CountRefreshes over a driver implementing %05b implements %05b", mask, got)
		}
		key := "k" + string(rune('a'+mask))
		if res, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
			t.Fatalf("Acquire through the wrapper = %+v, %v", res, err)
		}
		if err := d.Refresh(ctx, key, "t", time.Minute); err != nil {
			t.Errorf("Refresh through the wrapper: %v", err)
		}
		if br, ok := d.(driver.BatchRefresher); ok {
			errs := br.RefreshBatch(ctx, []driver.RefreshRequest{{Key: key, Token: "t", TTL: time.Minute}, {Key: key, Token: "x", TTL: time.Minute}})
			if len(errs) != 2 || errs[0] != nil || !errors.Is(errs[1], driver.ErrNotHeld) {
				t.Errorf("RefreshBatch through the wrapper = %v, want [nil ErrNotHeld]", errs)
			}
			if got := [4]int64{counts.Single.Load(), counts.Batches.Load(), counts.Locks.Load(), counts.Failed.Load()}; got != [4]int64{1, 1, 2, 1} {
				t.Errorf("counts (single, batches, locks, failed) = %v, want [1 1 2 1]", got)
			}
		} else if got := counts.Single.Load(); got != 1 {
			t.Errorf("single refreshes counted = %d, want 1", got)
		}
		if l, ok := d.(driver.Lister); ok {
			if keys, err := l.List(ctx, key); err != nil || len(keys) != 1 || keys[0].Key != key {
				t.Errorf("List through the wrapper = %+v, %v; want %q", keys, err, key)
			}
		}
		if n, ok := d.(driver.Notifier); ok {
			_, stop, err := n.WatchReleases(ctx, key)
			if err != nil {
				t.Errorf("WatchReleases through the wrapper: %v", err)
			} else {
				stop()
			}
		}
		if f, ok := d.(driver.ForceReleaser); ok {
			if info, err := f.ForceRelease(ctx, key); err != nil || !info.Held {
				t.Errorf("ForceRelease through the wrapper = %+v, %v; want the holder", info, err)
			}
		} else if err := d.Release(ctx, key, "t"); err != nil {
			t.Errorf("Release through the wrapper: %v", err)
		}
		if q, ok := d.(driver.Queuer); ok {
			if res, err := q.AcquireQueued(ctx, driver.Request{Key: key, Token: "q", TTL: time.Minute}); err != nil || !res.Acquired {
				t.Errorf("AcquireQueued through the wrapper = %+v, %v", res, err)
			}
		}
	}
}

// TestCountRefreshesClient: a Client over the wrapper of a Notifier still
// lists and force-unlocks (Lister, ForceReleaser found), and its auto-refresh
// goes through RefreshBatch.
func TestCountRefreshesClient(t *testing.T) {
	ctx := t.Context()
	d, counts := CountRefreshes(memdlock.NewStore().Driver())
	c := dlock.NewClient(d)
	defer c.Close()
	locks := HoldMany(ctx, t, c, "c/", 5, time.Second)
	time.Sleep(time.Second)
	CheckHeld(t, locks, "after 1s")
	if counts.Batches.Load() == 0 || counts.Single.Load() != 0 {
		t.Errorf("batches %d, single refreshes %d; want some batches and no single refresh", counts.Batches.Load(), counts.Single.Load())
	}
	keys, err := c.List(ctx, "c/")
	if err != nil || len(keys) != 5 {
		t.Errorf("Client.List over the wrapper = %d keys, %v; want 5", len(keys), err)
	}
	if _, err := c.ForceUnlock(ctx, "c/0"); err != nil {
		t.Errorf("Client.ForceUnlock over the wrapper: %v", err)
	}
}

type memHarness struct{ s *memdlock.Store }

func (h memHarness) MakeDriver(context.Context) (driver.Locker, error) { return h.s.Driver(), nil }
func (h memHarness) Close()                                            {}

func TestBatchRefresherMemdlock(t *testing.T) {
	RunBatchRefresherTests(t, func(context.Context, *testing.T) (Harness, error) {
		return memHarness{memdlock.NewStore()}, nil
	})
}
