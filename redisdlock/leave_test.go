package redisdlock_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestCloseLeavesQueues: a waiter that gives up (its ctx ends, or its
// Client is closed while it waits) and whose Client is then closed, as a
// process does before it exits, is out of the key's queue when Close
// returns: Inspect shows no waiter, and the waiter behind it is first, so
// the release names it and it gets the key without waiting for the gone
// waiter's entry to run out.
func TestCloseLeavesQueues(t *testing.T) {
	srv := testserver.StartRedis(t)
	tests := []struct {
		name string
		// giveUp makes the waiter stop waiting; it returns the error the
		// waiter's Lock must match.
		giveUp func(cancel context.CancelFunc, c *dlock.Client) error
	}{
		{"ctx ended, then Close", func(cancel context.CancelFunc, c *dlock.Client) error {
			cancel()
			return context.Canceled
		}},
		{"Close while waiting", func(cancel context.CancelFunc, c *dlock.Client) error {
			return dlock.ErrClosed
		}},
	}
	long := dlock.WithRetry(dlock.LinearBackoff(time.Hour))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 60*time.Second)
			key := "close-leaves " + tc.name
			hd, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
			queue, _ := hd.QueueKeys(key)
			holder := dlock.NewClient(hd)
			l, err := holder.TryLock(ctx, key, dlock.WithTTL(time.Minute))
			if err != nil {
				t.Fatalf("TryLock: %v", err)
			}

			gd, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
			gone := dlock.NewClient(gd)
			gctx, cancel := context.WithCancel(ctx)
			defer cancel()
			goneErr := make(chan error, 1)
			go func() {
				_, err := gone.Lock(gctx, key, long)
				goneErr <- err
			}()
			waitFor(t, 10*time.Second, "first waiter queued", func() bool {
				return slices.Equal(rdb.ZRange(ctx, queue, 0, -1).Val(), []string{gd.ID()})
			})
			nd, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
			next := dlock.NewClient(nd)
			t.Cleanup(func() { _ = next.Close() })
			got := lockInBackground(ctx, next, key, long)
			waitFor(t, 10*time.Second, "second waiter queued", func() bool {
				return slices.Equal(rdb.ZRange(ctx, queue, 0, -1).Val(), []string{gd.ID(), nd.ID()})
			})

			want := tc.giveUp(cancel, gone)
			if err := gone.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := <-goneErr; !errors.Is(err, want) {
				t.Fatalf("waiter that gave up: Lock = %v, want %v", err, want)
			}
			// No wait: the entry is gone when Close returns.
			if q := rdb.ZRange(ctx, queue, 0, -1).Val(); !slices.Equal(q, []string{nd.ID()}) {
				t.Errorf("queue after Close = %q, want only the next waiter %q", q, nd.ID())
			}
			if in, err := holder.Inspect(ctx, key); err != nil || in.Waiters != 1 {
				t.Errorf("Inspect after Close = %+v, %v; want 1 waiter (the next one)", in, err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			select {
			case err := <-got:
				if err != nil {
					t.Fatalf("next waiter: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("next waiter did not get the key")
			}
			if in, err := holder.Inspect(ctx, key); err != nil || in.Waiters != 0 {
				t.Errorf("Inspect at the end = %+v, %v; want 0 waiters", in, err)
			}
		})
	}
}

// TestCloseLeavesQueuesBounded: when the server cannot be reached (the
// connection blackholed), Close still returns within a few seconds.
func TestCloseLeavesQueuesBounded(t *testing.T) {
	srv := testserver.StartRedis(t)
	proxy := testserver.StartProxy(t, srv.Addr())
	ctx := testCtx(t, 60*time.Second)
	key := "close-bounded"
	hd, rdb := newDriver(t, srv.Addr(), redisdlock.Options{})
	queue, _ := hd.QueueKeys(key)
	holder := dlock.NewClient(hd)
	if _, err := holder.TryLock(ctx, key, dlock.WithTTL(time.Minute)); err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	gd, _ := newDriver(t, proxy.Addr(), redisdlock.Options{})
	gone := dlock.NewClient(gd)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	goneErr := make(chan error, 1)
	go func() {
		_, err := gone.Lock(gctx, key, dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
		goneErr <- err
	}()
	waitFor(t, 10*time.Second, "waiter queued", func() bool { return rdb.ZCard(ctx, queue).Val() == 1 })
	proxy.Blackhole(true)
	cancel()
	if err := <-goneErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter: Lock = %v, want context.Canceled", err)
	}
	done := make(chan error, 1)
	go func() { done <- gone.Close() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s with the server blackholed")
	}
}
