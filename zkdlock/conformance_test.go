package zkdlock

import (
	"context"
	"testing"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

type harness struct {
	t   *testing.T
	url string
}

func (h *harness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	u, err := driver.ParseURL(h.url)
	if err != nil {
		return nil, err
	}
	return openURL(ctx, u)
}

func (h *harness) Close() {}

func TestConformance(t *testing.T) {
	tests := []struct {
		name  string
		start func(t *testing.T) *testserver.ZooKeeper
	}{
		{"standalone", startStandalone},
		{"ensemble", func(t *testing.T) *testserver.ZooKeeper {
			return testserver.StartZooKeeperEnsemble(t, testserver.ZooKeeperConfig{}, 3)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			z := tc.start(t)
			url := "zk://" + z.Addr() + "/dlock-conformance"
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return &harness{t: t, url: url}, nil
			})
		})
	}
}
