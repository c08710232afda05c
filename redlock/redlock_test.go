package redlock_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redlock"
)

func TestConformance(t *testing.T) {
	nodes := startNodes(t, 5)
	tests := []struct {
		name string
		h    drivertest.Harness
	}{
		{"URL", urlHarness(testserver.RedlockURL(nodes...))},
		{"NewDriver", clientHarness{nodes: nodes, t: t}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return tc.h, nil
			})
		})
	}
}

// TestLayout checks what a grant leaves on the nodes: on every node the
// lock key holds exactly the token, with the same fence in the fence
// counter; a release removes the lock from every node.
func TestLayout(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 30*time.Second)
	c, d := newClient(t, nodes, redlock.Options{})
	cs := rawClients(t, nodes)
	if got := d.Quorum(); got != 3 {
		t.Fatalf("Quorum() = %d, want 3", got)
	}
	var last uint64
	for i := 0; i < 3; i++ {
		l, err := c.TryLock(ctx, "job", dlock.WithTTL(10*time.Second), dlock.WithMetadata("who=test"))
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		if l.Fence() <= last {
			t.Fatalf("fence %d, want > %d", l.Fence(), last)
		}
		last = l.Fence()
		// The key is exactly the name (no prefix), as redsync has it.
		// Nodes that answer after the majority may still be on their way.
		waitFor(t, 5*time.Second, "token on every node", func() bool {
			return count(holders(t, ctx, cs, "job"), l.Token()) == len(nodes)
		})
		// Every node's fence counter is at least the fence (nodes that
		// answered after the majority may have counted further), and a
		// majority has exactly the fence.
		// Raising the counters of nodes beyond the majority may still be
		// on its way too.
		exact := 0
		for i, n := range d.Nodes() {
			_, fenceKey, _ := n.Keys("job")
			var (
				got  string
				err  error
				f    uint64
				perr error
			)
			waitFor(t, 5*time.Second, "node "+strconv.Itoa(i)+"'s fence counter at least the fence", func() bool {
				got, err = cs[i].Get(ctx, fenceKey).Result()
				f, perr = strconv.ParseUint(got, 10, 64)
				return err == nil && perr == nil && f >= l.Fence()
			})
			if f == l.Fence() {
				exact++
			}
		}
		if exact < d.Quorum() {
			t.Errorf("%d nodes have the fence %d in their counter, want at least %d", exact, l.Fence(), d.Quorum())
		}
		in, err := c.Inspect(ctx, "job")
		if err != nil || !in.Held || in.Fence != l.Fence() || in.Metadata != "who=test" || in.TTL <= 0 || in.TTL > 10*time.Second {
			t.Errorf("Inspect = %+v, %v; want held, fence %d, metadata who=test, TTL in (0, 10s]", in, err, l.Fence())
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
		waitFor(t, 5*time.Second, "lock gone from every node", func() bool {
			return count(holders(t, ctx, cs, "job"), "") == len(nodes)
		})
	}
}

// TestInterop: a redsync-style lock (SET NX PX of the name on a majority)
// blocks dlock, and dlock's lock blocks SET NX on every node.
func TestInterop(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 30*time.Second)
	c := openURL(t, testserver.RedlockURL(nodes...))
	cs := rawClients(t, nodes)
	for _, rc := range cs[:3] {
		if ok, err := rc.SetNX(ctx, "shared", "other-owner", 5*time.Second).Result(); err != nil || !ok {
			t.Fatalf("SET NX = %v, %v", ok, err)
		}
	}
	if _, err := c.TryLock(ctx, "shared"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock while another owner holds a majority = %v, want ErrNotAcquired", err)
	}
	// Nothing was left on the two free nodes.
	if got := holders(t, ctx, cs, "shared"); got[3] != "" || got[4] != "" {
		waitFor(t, 5*time.Second, "partial grant given back", func() bool {
			got := holders(t, ctx, cs, "shared")
			return got[3] == "" && got[4] == ""
		})
	}
	in, err := c.Inspect(ctx, "shared")
	if err != nil || !in.Held || in.Fence != 0 {
		t.Fatalf("Inspect of a foreign lock = %+v, %v; want held with fence 0", in, err)
	}
	for _, rc := range cs[:3] {
		rc.Del(ctx, "shared")
	}
	l, err := c.TryLock(ctx, "shared")
	if err != nil {
		t.Fatalf("TryLock after the foreign release: %v", err)
	}
	waitFor(t, 5*time.Second, "token on every node", func() bool {
		return count(holders(t, ctx, cs, "shared"), l.Token()) == len(nodes)
	})
	for i, rc := range cs {
		if ok, err := rc.SetNX(ctx, "shared", "other-owner", 5*time.Second).Result(); err != nil || ok {
			t.Errorf("node %d: SET NX while dlock holds the key = %v, %v; want false", i, ok, err)
		}
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// waitFor polls cond every 5 ms until it holds or d passes.
var waitFor = redistest.WaitFor
