package redisdlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestFaults: the server faults of drivertest.RunFaultTests (a crash and a
// restart, connections ended, a partition, a paused server) on a server
// that keeps its writes, through a URL and through NewDriver over a
// go-redis client with its default options.
func TestFaults(t *testing.T) {
	servers, proxies := redistest.StartFaultServers(t, 1)
	for _, viaURL := range []bool{true, false} {
		open := func(ctx context.Context, addrs []string) (driver.Locker, error) {
			if viaURL {
				return urlHarness("redis://" + addrs[0]).MakeDriver(ctx)
			}
			return clientHarness{addr: addrs[0], t: t}.MakeDriver(ctx)
		}
		t.Run(map[bool]string{true: "URL", false: "NewDriver"}[viaURL], func(t *testing.T) {
			h := &redistest.FaultHarness{Servers: servers, ProxyFaults: testserver.ProxyFaultsOf(proxies...), Open: open}
			if viaURL {
				h.URLForChild = "redis://" + servers[0].Addr()
			}
			drivertest.RunFaultTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) { return h, nil })
		})
	}
}

// TestRestartLosesLock: a server without persistence forgets a held lock
// when it restarts. The holder's next refresh finds the key gone, so the
// lock ends then (an ErrNotHeld loss, not its deadline passing), and the
// next grant's fence is still higher (it follows the server's clock).
func TestRestartLosesLock(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	d, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
	for name, c := range map[string]*dlock.Client{"URL": openURL(t, srv.URL()), "NewDriver": dlock.NewClient(d)} {
		t.Run(name, func(t *testing.T) {
			l, err := c.TryLock(ctx, "k", dlock.WithTTL(3*time.Second))
			if err != nil {
				t.Fatalf("TryLock: %v", err)
			}
			srv.Restart()
			select {
			case <-l.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("Done not closed within 10s of the restart")
			}
			if err := l.Err(); !errors.Is(err, dlock.ErrLost) || !errors.Is(err, dlock.ErrNotHeld) {
				t.Fatalf("Err = %v, want ErrLost wrapping the refresh's ErrNotHeld", err)
			}
			l2, err := c.TryLock(ctx, "k")
			if err != nil {
				t.Fatalf("TryLock after the restart: %v", err)
			}
			if l2.Fence() <= l.Fence() {
				t.Errorf("fence after the restart = %d, want > %d", l2.Fence(), l.Fence())
			}
			if err := l2.Unlock(ctx); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
		})
	}
}
