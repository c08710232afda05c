package drivertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// ProcessHarness is a Harness whose backend another process can reach: the
// HolderKilled scenario re-runs the test binary as a child that takes a
// lock and is then killed, as a crashed service would be.
type ProcessHarness interface {
	Harness
	// URL returns what the child passes to dlock.Open to reach the
	// backend (the test binary imports the driver, so its scheme is
	// registered), or "" to skip the scenario. Where a lock's lease is a
	// session (ZooKeeper), its session timeout should be a few seconds.
	URL() string
}

// holderEnv carries a holderSpec to the child process.
const holderEnv = "DLOCK_DRIVERTEST_HOLDER"

type holderSpec struct {
	URL string        `json:"url"`
	Key string        `json:"key"`
	TTL time.Duration `json:"ttl"`
}

// runHolderChild is the child's side of HolderKilled: when the test binary
// was started as one, it takes the lock, says so on stdout, holds it until
// it is killed (or a minute has passed), and reports true.
func runHolderChild(t *testing.T) bool {
	raw := os.Getenv(holderEnv)
	if raw == "" {
		return false
	}
	var spec holderSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatalf("%s: %v", holderEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := dlock.Open(ctx, spec.URL)
	if err != nil {
		t.Fatalf("child: Open: %v", err)
	}
	l, err := c.TryLock(ctx, spec.Key, dlock.WithTTL(spec.TTL))
	if err != nil {
		t.Fatalf("child: TryLock: %v", err)
	}
	fmt.Printf("LOCKED %d\n", l.Fence())
	<-ctx.Done() // until killed
	return true
}

// testHolderKilled: a child process holds a lock (TTL 2 s, auto-refresh)
// and is killed with SIGKILL halfway through a lease; a waiter in this
// process gets the key, with a higher fence, no sooner than the kill and
// within the TTL plus 1.5 s.
func testHolderKilled(t *testing.T, f *faults) {
	h := faultHarness[ProcessHarness](f)
	if h.URL() == "" {
		t.Skip("the harness gives no URL for a child process")
	}
	c := f.client()
	ttl := min(2*time.Second, c.Capabilities().MaxTTL)
	key := f.key("crashed")
	spec, err := json.Marshal(holderSpec{URL: h.URL(), Key: key, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(f.ctx, os.Args[0], "-test.run="+runPattern(f.parent), "-test.count=1")
	cmd.Env = append(os.Environ(), holderEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	locked := make(chan uint64, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var fence uint64
			if _, err := fmt.Sscanf(sc.Text(), "LOCKED %d", &fence); err == nil {
				locked <- fence
			}
		}
	}()
	var childFence uint64
	select {
	case childFence = <-locked:
	case <-time.After(60 * time.Second):
		t.Fatal("the child process did not take the lock within 60 s")
	}

	type grant struct {
		l   *dlock.Lock
		err error
		at  time.Time
	}
	got := make(chan grant, 1)
	go func() {
		ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
		defer cancel()
		l, err := c.Lock(ctx, key)
		got <- grant{l, err, time.Now()}
	}()
	// Let the child refresh at least once more, then kill it mid-lease.
	select {
	case g := <-got:
		t.Fatalf("the waiter got the key while the child held it: %v, %v", g.l, g.err)
	case <-time.After(ttl / 2):
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	g := <-got
	if g.err != nil {
		t.Fatalf("the waiter, after the holder was killed: %v", g.err)
	}
	defer f.unlock(g.l)
	took := g.at.Sub(killed)
	if took > ttl+1500*time.Millisecond {
		t.Errorf("the waiter got the key %v after the holder was killed, want within its TTL %v + 1.5 s", took, ttl)
	}
	t.Logf("the waiter got the key %v after the holder was killed (TTL %v)", took.Round(time.Millisecond), ttl)
	if g.l.Fence() <= childFence {
		t.Errorf("the waiter's fence %d, want more than the killed holder's %d", g.l.Fence(), childFence)
	}
}

// runPattern is a -test.run pattern that selects exactly the test named
// name (with its subtest path).
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}
