package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestOpenWithUserUnreachable: with a user, Open itself talks to the
// server (to fetch a token), and gives up at the dial timeout. (Calls on a
// server that is down: drivertest's DownCallsEnd.)
func TestOpenWithUserUnreachable(t *testing.T) {
	addr := testserver.Addr(testserver.FreePort(t)) // nothing listens there
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := dlock.Open(ctx, "etcd://root:s3cret-pw@"+addr+"?dial-timeout=300ms")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Open with a user returned after %v, want about the 300ms dial timeout", took)
	}
	if !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(fmt.Sprint(err), addr) || strings.Contains(fmt.Sprint(err), "s3cret-pw") {
		t.Errorf("Open with a user = %v; want ErrUnavailable naming %s, without the password", err, addr)
	}
}

// owners checks, per key, that no grant happens while an earlier holder
// still believes it holds the key, and that fences increase.
type owners struct {
	mu         sync.Mutex
	cur        map[string]*dlock.Lock
	lastFence  map[string]uint64
	grants     map[string]int
	violations []string
}

func newOwners() *owners {
	return &owners{cur: map[string]*dlock.Lock{}, lastFence: map[string]uint64{}, grants: map[string]int{}}
}

func (o *owners) enter(key string, l *dlock.Lock) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev := o.cur[key]; prev != nil {
		select {
		case <-prev.Done():
		default:
			o.violations = append(o.violations, fmt.Sprintf("%q granted (fence %d) while fence %d still held", key, l.Fence(), prev.Fence()))
		}
	}
	if l.Fence() <= o.lastFence[key] {
		o.violations = append(o.violations, fmt.Sprintf("%q fence %d after %d", key, l.Fence(), o.lastFence[key]))
	}
	o.cur[key], o.lastFence[key] = l, l.Fence()
	o.grants[key]++
}

func (o *owners) leave(key string, l *dlock.Lock) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cur[key] == l {
		delete(o.cur, key)
	}
}

func (o *owners) count(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.grants[key]
}

// TestCluster runs on a 3-member cluster, whose members the client uses in
// turn.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("3-member cluster: skipped with -short")
	}
	srv := testserver.StartEtcdCluster(t, 3)
	url := "etcd://" + srv.Addr()
	t.Run("RefreshRightAfterGrant", func(t *testing.T) { testRefreshRightAfterGrant(t, url) })
	t.Run("LeaderKill", func(t *testing.T) { testLeaderKill(t, srv, url) })
}

// testRefreshRightAfterGrant: a refresh sent to another member right after
// the grant must see the grant (the check is a linearizable read).
func testRefreshRightAfterGrant(t *testing.T, url string) {
	ctx := testCtx(t, 30*time.Second)
	a, b := openClient(t, url), openClient(t, url)
	for i := 0; i < 60; i++ {
		c := a
		if i%2 == 1 {
			c = b
		}
		l, err := c.TryLock(ctx, "refresh-after-grant")
		if err != nil {
			t.Fatalf("round %d: TryLock: %v", i, err)
		}
		if err := l.Refresh(ctx, 0); err != nil {
			t.Fatalf("round %d: Refresh right after the grant: %v", i, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("round %d: Unlock: %v", i, err)
		}
	}
}

// testLeaderKill kills -9 the leader while locks are held and waited on:
// no double grant, and grants go on.
func testLeaderKill(t *testing.T, srv *testserver.Etcd, url string) {
	keys := []string{"kill-a", "kill-b"}
	o := newOwners()
	ctx, stop := context.WithCancel(testCtx(t, 60*time.Second))
	var wg sync.WaitGroup
	var errCount atomic.Int64
	for w := 0; w < 6; w++ {
		c := openClient(t, url)
		key := keys[w%len(keys)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				l, err := c.Lock(lctx, key, dlock.WithTTL(3*time.Second))
				cancel()
				if err != nil {
					if ctx.Err() == nil {
						errCount.Add(1)
						time.Sleep(50 * time.Millisecond)
					}
					continue
				}
				o.enter(key, l)
				time.Sleep(2 * time.Millisecond)
				o.leave(key, l)
				uctx, ucancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := l.Unlock(uctx); err != nil {
					t.Logf("Unlock: %v", err)
				}
				ucancel()
			}
		}()
	}
	waitGrants := func(phase string, n int, within time.Duration) {
		t.Helper()
		base := map[string]int{}
		for _, k := range keys {
			base[k] = o.count(k)
		}
		start := time.Now()
		deadline := start.Add(within)
		for _, k := range keys {
			for o.count(k) < base[k]+n {
				if time.Now().After(deadline) {
					t.Fatalf("%s: %q granted %d times in %v, want at least %d", phase, k, o.count(k)-base[k], within, n)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		t.Logf("%s: %d grants of each key after %v", phase, n, time.Since(start).Round(time.Millisecond))
	}
	waitGrants("before the kill", 20, 20*time.Second)

	leader := findLeader(t, srv)
	t.Logf("killing the leader %s", leader.Name())
	leader.Kill()
	waitGrants("after the kill", 20, 20*time.Second)
	leader.Restart()
	waitGrants("after the restart", 20, 20*time.Second)
	stop()
	wg.Wait()
	for _, v := range o.violations {
		t.Error(v)
	}
	t.Logf("grants: %q=%d %q=%d; failed Lock calls: %d", keys[0], o.count(keys[0]), keys[1], o.count(keys[1]), errCount.Load())
}

func findLeader(t *testing.T, srv *testserver.Etcd) *testserver.EtcdMember {
	t.Helper()
	cli := rawClient(t, srv.Endpoints())
	for _, m := range srv.Members {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		st, err := cli.Status(ctx, m.ClientAddr)
		cancel()
		if err != nil {
			t.Fatalf("Status %s: %v", m.ClientAddr, err)
		}
		if st.Leader == st.Header.MemberId {
			return m
		}
	}
	t.Fatal("no leader")
	return nil
}

// faultHarness is a harness over a single-member server of its own that
// the fault scenarios may kill, restart, pause, and cut off through a proxy.
// (etcd extends every lease when a member starts: RestartLeaseLapses waits
// for that.) TestCluster kills members of a cluster.
type faultHarness struct {
	harness
	srv *testserver.Etcd
	testserver.ProxyFaults
}

func (h *faultHarness) Addr() string       { return h.srv.Addr() }
func (h *faultHarness) Kill(testing.TB)    { h.srv.Members[0].Kill() }
func (h *faultHarness) Restart(testing.TB) { h.srv.Members[0].Restart() }

func (h *faultHarness) Pause(t testing.TB) func() {
	return drivertest.Break(t, h.srv.Members[0].Pause, h.srv.Members[0].Resume)
}

func (h *faultHarness) MakeProxiedDriver(ctx context.Context) (driver.Locker, error) {
	return openDriver(ctx, "etcd://"+h.Proxies[0].Addr())
}

func (h *faultHarness) URL() string { return h.url }

// TestFaults runs the portable fault scenarios of a server killed and
// restarted, paused, or cut off.
func TestFaults(t *testing.T) {
	srv := testserver.StartEtcd(t)
	proxy := testserver.StartProxy(t, srv.Addr())
	drivertest.RunFaultTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &faultHarness{harness: harness{url: "etcd://" + srv.Addr()}, srv: srv, ProxyFaults: testserver.ProxyFaultsOf(proxy)}, nil
	})
}
