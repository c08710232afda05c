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
	"sync"
	"syscall"
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

// holderSpec is what the child process holds.
type holderSpec struct {
	URL string        `json:"url"`
	Key string        `json:"key"`
	TTL time.Duration `json:"ttl"`
	// Limit > 0 takes a permit of a Semaphore of that size, Limit 0 with
	// Reader a read lock of an RWMutex; otherwise the key's mutex.
	Limit  int  `json:"limit,omitempty"`
	Reader bool `json:"reader,omitempty"`
	// Election campaigns in the election on Key instead (Limit and Reader
	// unset): the child is leader, its term the fence.
	Election bool `json:"election,omitempty"`
}

// runHolderChild is the child's side of the holder scenarios: when the test
// binary was started as one, it takes the lock (or is elected leader), says so on stdout with its
// fence and validity deadline, reports each new deadline as auto-refresh
// moves it and the loss when Done closes, until it is killed (or a minute
// has passed), and reports true.
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
	var l *dlock.Lock
	switch {
	case spec.Election:
		l, err = c.Election(spec.Key).Campaign(ctx, "child", dlock.WithTTL(spec.TTL))
	case spec.Limit > 0:
		l, err = c.Semaphore(spec.Key, spec.Limit).TryAcquire(ctx, dlock.WithTTL(spec.TTL))
	case spec.Reader:
		l, err = c.RWMutex(spec.Key).TryRLock(ctx, dlock.WithTTL(spec.TTL))
	default:
		l, err = c.TryLock(ctx, spec.Key, dlock.WithTTL(spec.TTL))
	}
	if err != nil {
		t.Fatalf("child: taking the lock: %v", err)
	}
	last := l.Deadline()
	fmt.Printf("LOCKED %d %d\n", l.Fence(), last.UnixNano())
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-l.Done():
			fmt.Printf("LOST %v\n", l.Err())
			<-ctx.Done() // until killed
			return true
		case <-tick.C:
			if d := l.Deadline(); !d.Equal(last) {
				last = d
				fmt.Printf("VALID %d\n", d.UnixNano())
			}
		case <-ctx.Done():
			return true
		}
	}
}

// holderProc is the parent's view of a child holding a lock: what it
// reported last.
type holderProc struct {
	cmd   *exec.Cmd
	fence uint64
	valid chan struct{} // a new deadline was reported
	lost  chan string   // the child's lock ended: its Err

	mu       sync.Mutex
	deadline time.Time // the child's last reported validity deadline
	resumed  bool      // set by the parent after SIGCONT
	extended bool      // the child reported a new deadline after resumed
}

// startHolder runs the test binary again as a child that takes what spec
// says, and returns once it holds it. The child is killed when the test
// ends.
func (f *faults) startHolder(spec holderSpec) *holderProc {
	t := f.t
	t.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(f.ctx, os.Args[0], "-test.run="+runPattern(f.parent), "-test.count=1")
	cmd.Env = append(os.Environ(), holderEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &holderProc{cmd: cmd, valid: make(chan struct{}, 1), lost: make(chan string, 1)}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	locked := make(chan uint64, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var fence uint64
			var unix int64
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "LOST "):
				p.lost <- strings.TrimPrefix(line, "LOST ")
			case strings.HasPrefix(line, "LOCKED "):
				if _, err := fmt.Sscanf(line, "LOCKED %d %d", &fence, &unix); err == nil {
					p.setDeadline(unix)
					locked <- fence
				}
			case strings.HasPrefix(line, "VALID "):
				if _, err := fmt.Sscanf(line, "VALID %d", &unix); err == nil {
					p.setDeadline(unix)
				}
			}
		}
	}()
	select {
	case p.fence = <-locked:
	case <-time.After(60 * time.Second):
		t.Fatal("the child process did not take the lock within 60 s")
	}
	return p
}

func (p *holderProc) setDeadline(unix int64) {
	p.mu.Lock()
	p.deadline = time.Unix(0, unix)
	p.extended = p.extended || p.resumed
	p.mu.Unlock()
	select {
	case p.valid <- struct{}{}:
	default:
	}
}

// lastDeadline is the child's last reported validity deadline.
func (p *holderProc) lastDeadline() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deadline
}

// holderGone is how the child loses its lock in a holder scenario.
type holderGone int

const (
	holderKilled holderGone = iota // SIGKILL: a crash
	holderPaused                   // SIGSTOP, and SIGCONT after the take-over
)

// testHolderGone is the holder scenarios' oracle: a child process holds
// what spec says (auto-refresh on) and stops halfway through a lease (how
// says how); take, run in this process, waits for the key and must get it
// no sooner than the child's last validity deadline (never two valid
// holders beyond the limit), with a higher fence. After a crash that is
// within the TTL plus 1.5 s (plus 1 s for a leader: spec.Election). A
// paused child, resumed after the take-over, must report its loss and never
// a new deadline. It returns the stopped child's fence.
func (f *faults) testHolderGone(spec holderSpec, how holderGone, take func(ctx context.Context) (*dlock.Lock, error)) (deposed uint64) {
	t := f.t
	h := faultHarness[ProcessHarness](f)
	if h.URL() == "" {
		t.Skip("the harness gives no URL for a child process")
	}
	spec.URL = h.URL()
	child := f.startHolder(spec)
	type grant struct {
		l   *dlock.Lock
		err error
		at  time.Time
	}
	got := make(chan grant, 1)
	go func() {
		ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
		defer cancel()
		l, err := take(ctx)
		got <- grant{l, err, time.Now()}
	}()
	// Let the child refresh at least once more, then stop it mid-lease,
	// right after it reported its deadline.
	select {
	case g := <-got:
		t.Fatalf("the waiter got the key while the child held it: %v, %v", g.l, g.err)
	case <-time.After(spec.TTL / 2):
	}
	select {
	case <-child.valid:
	case <-time.After(spec.TTL):
		t.Fatal("the child reported no refreshed deadline within its TTL")
	}
	sig := map[holderGone]os.Signal{holderKilled: os.Kill, holderPaused: syscall.SIGSTOP}[how]
	if err := child.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	g := <-got
	if g.err != nil {
		t.Fatalf("the waiter, after the holder stopped: %v", g.err)
	}
	defer f.unlock(g.l)
	if dl := child.lastDeadline(); g.at.Before(dl) {
		t.Errorf("the waiter was granted %v before the stopped holder's validity deadline: two valid holders", dl.Sub(g.at))
	}
	took := g.at.Sub(stopped)
	slack := 1500 * time.Millisecond
	if spec.Election {
		slack = time.Second
	}
	if how == holderKilled && took > spec.TTL+slack {
		t.Errorf("the waiter got the key %v after the holder was killed, want within its TTL %v + %v", took, spec.TTL, slack)
	}
	t.Logf("the waiter got the key %v after the holder stopped (TTL %v)", took.Round(time.Millisecond), spec.TTL)
	if g.l.Fence() <= child.fence {
		t.Errorf("the waiter's fence %d, want more than the stopped holder's %d", g.l.Fence(), child.fence)
	}
	if how != holderPaused {
		return child.fence
	}
	child.mu.Lock()
	child.resumed = true
	child.mu.Unlock()
	if err := child.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case why := <-child.lost:
		if !strings.Contains(why, "lost") {
			t.Errorf("the resumed holder's Err = %q, want a loss", why)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the resumed holder did not report its loss within 10 s")
	}
	child.mu.Lock()
	defer child.mu.Unlock()
	if child.extended {
		t.Error("the resumed holder reported a new validity deadline: it refreshed a lock another holder has")
	}
	return child.fence
}

// testHolderKilled: a child process holds a lock (TTL 2 s, auto-refresh)
// and is killed with SIGKILL halfway through a lease; a waiter in this
// process gets the key, with a higher fence, no sooner than the child's
// validity deadline and within the TTL plus 1.5 s of the kill.
func testHolderKilled(t *testing.T, f *faults) {
	c := f.client()
	key := f.key("crashed")
	f.testHolderGone(holderSpec{Key: key, TTL: ttlWithin(c, 2*time.Second)}, holderKilled, func(ctx context.Context) (*dlock.Lock, error) {
		return c.Lock(ctx, key)
	})
}

// testSemaphoreHolderKilled: of a semaphore of 2, a child process holds one
// permit and this process the other; the child is killed, and a third
// client's Acquire gets a permit as HolderKilled's waiter gets the key,
// while the other permit stays held.
func testSemaphoreHolderKilled(t *testing.T, f *faults) {
	f.semaphoreHolderGone(holderKilled)
}

// testSemaphoreHolderPaused is SemaphoreHolderKilled with the child paused
// (SIGSTOP) instead, and resumed once the third client has the permit: it
// must see its permit lost and never refresh it.
func testSemaphoreHolderPaused(t *testing.T, f *faults) {
	f.semaphoreHolderGone(holderPaused)
}

func (f *faults) semaphoreHolderGone(how holderGone) {
	f.needShared()
	a, c := f.client(), f.client()
	key := f.key("permits")
	ttl := ttlWithin(c, 2*time.Second)
	kept := f.permit(a.Semaphore(key, 2), dlock.WithTTL(10*time.Second))
	f.testHolderGone(holderSpec{Key: key, TTL: ttl, Limit: 2}, how, func(ctx context.Context) (*dlock.Lock, error) {
		return c.Semaphore(key, 2).Acquire(ctx)
	})
	if err := kept.Err(); err != nil {
		f.t.Errorf("the other permit's holder lost it: %v", err)
	}
	f.unlock(kept)
}

// testReaderKilled: a child process holds a read lock and is killed; a
// writer waiting in this process gets the key as HolderKilled's waiter
// does: a crashed reader frees its share at its TTL.
func testReaderKilled(t *testing.T, f *faults) {
	f.needShared()
	c := f.client()
	key := f.key("reader")
	f.testHolderGone(holderSpec{Key: key, TTL: ttlWithin(c, 2*time.Second), Reader: true}, holderKilled, func(ctx context.Context) (*dlock.Lock, error) {
		return c.RWMutex(key).Lock(ctx)
	})
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
