package redlock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/redlock"
)

// TestCloseLeavesQueues: a waiter whose Client is closed while it waits (as
// a process closes it before it exits) is out of the key's queue on every
// node when Close returns, so no node keeps a release's wake-up for it.
func TestCloseLeavesQueues(t *testing.T) {
	nodes := startNodes(t, 3)
	ctx := testCtx(t, 60*time.Second)
	const key = "close-leaves"
	holder, _ := newClient(t, nodes, redlock.Options{})
	if _, err := holder.TryLock(ctx, key, dlock.WithTTL(time.Minute)); err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	gone, gd := newClient(t, nodes, redlock.Options{})
	cs := rawClients(t, nodes)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	goneErr := make(chan error, 1)
	go func() {
		_, err := gone.Lock(gctx, key, dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
		goneErr <- err
	}()
	// The key's queue on each node, named like its info key (see
	// redisdlock's key layout); the waiter is the only client queued.
	_, _, info := gd.Nodes()[0].Keys(key)
	queue := strings.Replace(info, "}info:", "}queue:", 1)
	queued := func() int {
		n := 0
		for _, c := range cs {
			n += int(c.ZCard(ctx, queue).Val())
		}
		return n
	}
	waitFor(t, 10*time.Second, "waiter queued on every node", func() bool { return queued() == len(nodes) })
	if err := gone.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := queued(); n != 0 {
		t.Errorf("after Close the waiter is still queued on %d of %d nodes, want 0", n, len(nodes))
	}
	if err := <-goneErr; !errors.Is(err, dlock.ErrClosed) {
		t.Errorf("waiter: Lock = %v, want ErrClosed", err)
	}
}

// TestCloseLeavesQueuesBounded: with every node unreachable (blackholed),
// Close of a client that was queued still returns within a few seconds:
// the nodes are left in parallel, each within its own bound.
func TestCloseLeavesQueuesBounded(t *testing.T) {
	nodes := startNodes(t, 5)
	proxies, url := proxied(t, nodes, "")
	ctx := testCtx(t, 60*time.Second)
	const key = "close-bounded"
	holder, _ := newClient(t, nodes, redlock.Options{})
	if _, err := holder.TryLock(ctx, key, dlock.WithTTL(time.Minute)); err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	gone, err := dlock.Open(ctx, url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	goneErr := make(chan error, 1)
	go func() {
		_, err := gone.Lock(gctx, key, dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
		goneErr <- err
	}()
	cs := rawClients(t, nodes)
	waitFor(t, 10*time.Second, "waiter queued on every node", func() bool {
		n := 0
		for _, c := range cs {
			keys, _ := c.Keys(ctx, "*queue:"+key).Result()
			for _, k := range keys {
				n += int(c.ZCard(ctx, k).Val())
			}
		}
		return n == len(nodes)
	})
	for _, p := range proxies {
		p.Blackhole(true)
	}
	cancel()
	if err := <-goneErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter: Lock = %v, want context.Canceled", err)
	}
	done := make(chan error, 1)
	go func() { done <- gone.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		// Each node's Close is bounded by 2 s; one after the other would
		// take up to 10 s.
		t.Fatal("Close did not return within 5s with every node blackholed")
	}
}
