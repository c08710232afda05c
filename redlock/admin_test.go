package redlock_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/redlock"
)

// holdOn takes key for token directly on the nodes numbered in on.
func holdOn(t *testing.T, ctx context.Context, d *redlock.Driver, key, token string, on ...int) {
	t.Helper()
	for _, i := range on {
		r, err := d.Nodes()[i].Acquire(ctx, driver.Request{Key: key, Token: token, TTL: time.Minute, Metadata: "by " + token})
		if err != nil || !r.Acquired {
			t.Fatalf("Acquire(%q, %q) on node %d = %+v, %v; want acquired", key, token, i, r, err)
		}
	}
}

// TestListQuorum: a key is listed when a majority of nodes hold it for one
// token, with what Inspect reports; keys held by a minority, or split
// between owners, are not; List works with a minority of nodes down or
// unresponsive and fails with ErrUnavailable without a majority.
func TestListQuorum(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 90*time.Second)
	ps, url := proxied(t, nodes, "node_timeout=100ms")
	c := openURL(t, url)
	_, d := newClient(t, nodes, redlock.Options{})
	l, err := c.TryLock(ctx, "all", dlock.WithTTL(time.Minute), dlock.WithMetadata("m"))
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	holdOn(t, ctx, d, "three", "Z", 0, 1, 2)
	holdOn(t, ctx, d, "two", "X", 0, 1)
	holdOn(t, ctx, d, "split", "X", 0, 1)
	holdOn(t, ctx, d, "split", "Y", 2, 3)
	holdOn(t, ctx, d, "split3", "X", 0, 1, 4)
	holdOn(t, ctx, d, "split3", "Y", 2, 3)

	check := func(what string, want ...string) {
		t.Helper()
		got, err := c.List(ctx, "")
		if err != nil {
			t.Fatalf("%s: List: %v", what, err)
		}
		var names []string
		for _, in := range got {
			names = append(names, in.Key)
			want, err := c.Inspect(ctx, in.Key)
			if err != nil {
				t.Fatalf("%s: Inspect: %v", what, err)
			}
			if !in.Held || in.Fence != want.Fence || in.Metadata != want.Metadata || in.Waiters != -1 || in.TTL <= 0 || in.TTL > time.Minute {
				t.Errorf("%s: List has %+v, want Inspect's %+v", what, in, want)
			}
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s: List = %q, want %q", what, names, want)
		}
	}
	check("all nodes up", "all", "split3", "three")
	if in, _ := c.List(ctx, "all"); len(in) != 1 || in[0].Fence != l.Fence() || in[0].Metadata != "m" {
		t.Errorf("List(all) = %+v, want the lock's fence %d and metadata", in, l.Fence())
	}

	// Two nodes unresponsive: the others decide, after the grace.
	ps[3].Blackhole(true)
	ps[4].Blackhole(true)
	check("nodes 3 and 4 blackholed", "all", "three")
	ps[2].Blackhole(true)
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = c.List(lctx, "")
	ended := lctx.Err()
	cancel()
	if !errors.Is(err, dlock.ErrUnavailable) || ended != nil {
		t.Errorf("List with 3 of 5 nodes blackholed = %v (deadline ended: %v); want ErrUnavailable before the deadline", err, ended)
	}
	for _, p := range ps {
		p.ResetAll()
		p.Blackhole(false)
	}
	nodes[4].Kill()
	check("node 4 down", "all", "three")
}

// TestForceReleaseQuorum: the forced release frees the majority's holder on
// every node that has it, leaves other owners' minority holds alone, keeps
// the fence counters, and the freed holder's refreshes are refused; a
// lock of another library is freed, an application's keys are left alone.
func TestForceReleaseQuorum(t *testing.T) {
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 60*time.Second)
	c, d := newClient(t, nodes, redlock.Options{})
	raw := rawClients(t, nodes)
	holdOn(t, ctx, d, "k", "Z", 0, 1, 2)
	holdOn(t, ctx, d, "k", "W", 3)
	before, err := d.Inspect(ctx, "k")
	if err != nil || !before.Held {
		t.Fatalf("Inspect = %+v, %v; want held", before, err)
	}
	nodes[4].Kill()

	in, err := d.ForceRelease(ctx, "k")
	if err != nil || !in.Held || in.Fence != before.Fence || in.Metadata != "by Z" {
		t.Fatalf("ForceRelease = %+v, %v; want Inspect's %+v", in, err, before)
	}
	if got := holders(t, ctx, raw[:4], "k"); !slices.Equal(got, []string{"", "", "", "W"}) {
		t.Errorf("after ForceRelease the nodes hold %q, want only node 3's other owner", got)
	}
	if err := d.Refresh(ctx, "k", "Z", time.Minute); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("freed holder's Refresh = %v, want ErrNotHeld", err)
	}
	if errs := d.RefreshBatch(ctx, []driver.RefreshRequest{{Key: "k", Token: "Z", TTL: time.Minute}}); !errors.Is(errs[0], driver.ErrNotHeld) {
		t.Errorf("freed holder's RefreshBatch = %v, want ErrNotHeld", errs[0])
	}
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock after ForceRelease: %v", err)
	}
	if l.Fence() <= in.Fence {
		t.Errorf("fence after ForceRelease = %d, want above the freed %d", l.Fence(), in.Fence)
	}
	nodes[4].Restart()

	// Another library's lock (SET NX PX on a majority) is freed; keys
	// without an expiry are an application's and stay.
	for _, r := range raw[:3] {
		if err := r.Set(ctx, "foreign", "theirs", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if err := r.Set(ctx, "config", "data", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if in, err := d.ForceRelease(ctx, "foreign"); err != nil || !in.Held || in.Fence != 0 {
		t.Errorf("ForceRelease(foreign) = %+v, %v; want held with fence 0", in, err)
	}
	if got := holders(t, ctx, raw, "foreign"); count(got, "") != 5 {
		t.Errorf("the other library's lock is left on the nodes: %q", got)
	}
	if in, err := d.ForceRelease(ctx, "config"); !errors.Is(err, dlock.ErrInvalidKey) {
		t.Errorf("ForceRelease(config) = %+v, %v; want ErrInvalidKey", in, err)
	}
	if got := holders(t, ctx, raw, "config"); count(got, "data") != 3 {
		t.Errorf("ForceRelease(config) changed an application's keys: %q", got)
	}
	if in, err := d.ForceRelease(ctx, "free"); err != nil || in.Held {
		t.Errorf("ForceRelease(free) = %+v, %v; want not held", in, err)
	}
}
