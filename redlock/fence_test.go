package redlock_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/redlock"
)

// TestFenceAcrossRestarts: fences strictly increase across grants while
// nodes are cut off, and restarted without persistence (kept down longer
// than the TTL), between acquisitions, including the case the second round
// exists for: a later majority that shares a single node with the previous
// one, that node restarted empty, the others holding older counters.
func TestFenceAcrossRestarts(t *testing.T) {
	const (
		ttl   = 300 * time.Millisecond
		delay = ttl + ttl/2 // a restarted node stays down this long
	)
	nodes := startNodes(t, 5)
	ctx := testCtx(t, 120*time.Second)
	ps, url := proxied(t, nodes, "")
	c := openURL(t, url)
	cs := rawClients(t, nodes)
	d, err := redlock.NewDriver(cs, redlock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, counterKey, _ := d.(*redlock.Driver).Nodes()[0].Keys("k")

	var last uint64
	grant := func(what string) {
		t.Helper()
		// Lock, not TryLock: a node cut off during the last release may
		// hold the key until its TTL runs out.
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		l, err := c.Lock(lctx, "k", dlock.WithTTL(ttl))
		if err != nil {
			t.Fatalf("%s: Lock: %v", what, err)
		}
		if l.Fence() <= last {
			t.Fatalf("%s: fence %d, want > %d", what, l.Fence(), last)
		}
		last = l.Fence()
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("%s: Unlock: %v", what, err)
		}
	}
	cut := func(i int) { ps[i].ResetAll(); ps[i].Blackhole(true) }
	heal := func(i int) { ps[i].ResetAll(); ps[i].Blackhole(false) }
	counter := func(i int) uint64 {
		v, err := cs[i].Get(ctx, counterKey).Result()
		if err == redis.Nil {
			return 0
		}
		if err != nil {
			t.Fatalf("GET counter on node %d: %v", i, err)
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		return n
	}

	// Grant with all nodes up until their counters agree (on a new key
	// the nodes that answer after the majority count from their own
	// clocks; later grants bring them in line).
	for i := 0; ; i++ {
		grant("all nodes up")
		time.Sleep(20 * time.Millisecond)
		same := true
		for n := range nodes {
			same = same && counter(n) == last
		}
		if same {
			break
		}
		if i == 20 {
			t.Fatalf("fence counters of the nodes never agreed")
		}
	}
	// The grant is recorded on nodes 0-2 only.
	cut(3)
	cut(4)
	grant("nodes 3, 4 cut off")
	f1 := last
	// The next majority, {2, 3, 4}, shares only node 2 with it, and node 2
	// comes back empty.
	cut(0)
	cut(1)
	nodes[2].Kill()
	time.Sleep(delay)
	nodes[2].Restart()
	heal(3)
	heal(4)
	for _, i := range []int{3, 4} {
		if got := counter(i); got >= f1 {
			t.Fatalf("node %d's counter is %d, want below %d for the test to mean something", i, got, f1)
		}
	}
	grant("majority {2 restarted, 3, 4}")
	heal(0)
	heal(1)
	grant("all nodes back")

	// Random minorities cut off or restarted, between acquisitions.
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 8; round++ {
		perm := rng.Perm(len(nodes))
		down := perm[:rng.IntN(3)] // 0, 1 or 2 nodes
		restart := rng.IntN(2) == 0
		for _, i := range down {
			if restart {
				nodes[i].Kill()
			} else {
				cut(i)
			}
		}
		if restart && len(down) > 0 {
			time.Sleep(delay)
			for _, i := range down {
				nodes[i].Restart()
			}
		}
		grant("round " + strconv.Itoa(round))
		for _, i := range down {
			if !restart {
				heal(i)
			}
		}
	}
}
