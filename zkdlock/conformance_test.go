package zkdlock

import (
	"context"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

type harness struct {
	url      string
	shortTTL time.Duration
}

func (h *harness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	u, err := driver.ParseURL(h.url)
	if err != nil {
		return nil, err
	}
	return OpenURL(ctx, u)
}

func (h *harness) Close() {}

// ShortTTL: three JVMs on a small, busy test machine can stall for a good
// part of the default 300 ms, which a refresh every TTL/3 must survive.
func (h *harness) ShortTTL() time.Duration { return h.shortTTL }

func TestConformance(t *testing.T) {
	tests := []struct {
		name     string
		start    func(t *testing.T) *testserver.ZooKeeper
		shortTTL time.Duration
	}{
		{"standalone", startStandalone, 300 * time.Millisecond},
		{"ensemble", func(t *testing.T) *testserver.ZooKeeper {
			return testserver.StartZooKeeperEnsemble(t, testserver.ZooKeeperConfig{}, 3)
		}, time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z := tc.start(t)
			// A session timeout of a minute (the test servers' largest):
			// the lock family's WriterGivesUp takes a writer's lock with a
			// TTL of a minute, which MaxTTL (the session timeout) must
			// allow.
			url := "zk://" + z.Addr() + "/dlock-conformance?session_timeout=1m"
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return &harness{url: url, shortTTL: tc.shortTTL}, nil
			})
		})
	}
}
