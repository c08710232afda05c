package etcddlock

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// harness opens a new driver, with its own connection, per MakeDriver.
type harness struct{ url string }

func (h *harness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	return openDriver(ctx, h.url)
}

func (h *harness) Close() {}

// ShortTTL is the driver's MinTTL: etcd leases count whole seconds.
func (h *harness) ShortTTL() time.Duration { return time.Second }

func TestConformance(t *testing.T) {
	srv := testserver.StartEtcd(t)
	url := "etcd://" + srv.Addr()
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &harness{url: url}, nil
	})
}

func TestConformanceCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("3-member cluster: skipped with -short")
	}
	srv := testserver.StartEtcdCluster(t, 3)
	url := "etcd://" + srv.Addr()
	drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &harness{url: url}, nil
	})
}

// rawClient returns a plain etcd client for the test's own reads, writes,
// sessions and revocations.
func rawClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("clientv3.New: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// openDriver opens the driver for rawURL with OpenURL.
func openDriver(ctx context.Context, rawURL string) (driver.Locker, error) {
	u, err := driver.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return OpenURL(ctx, u)
}

// ownDriver opens the driver for rawURL, closed when the test ends.
func ownDriver(t testing.TB, ctx context.Context, rawURL string) *etcdDriver {
	t.Helper()
	l, err := openDriver(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l.(*etcdDriver)
}

// openClient opens a dlock Client on rawURL and closes it when the test ends.
func openClient(t testing.TB, rawURL string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dlock.Open(ctx, rawURL, opts...)
	if err != nil {
		t.Fatalf("Open(%q): %v", rawURL, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testCtx is the test's context bounded by d.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
