package redlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redlock"
)

// testCtx returns a context that ends after d or with the test.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startNodes starts n independent redis-servers.
func startNodes(t testing.TB, n int, opts ...testserver.RedisOption) []*testserver.Redis {
	t.Helper()
	return testserver.StartRedisNodes(t, n, opts...)
}

// openURL opens a dlock Client from a redlock URL, closed when the test
// ends.
func openURL(t testing.TB, rawURL string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	c, err := dlock.Open(testCtx(t, 10*time.Second), rawURL, opts...)
	if err != nil {
		t.Fatalf("Open(%q): %v", rawURL, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawClients returns plain go-redis clients of nodes (go-redis's default
// options), closed when the test ends.
func rawClients(t testing.TB, nodes []*testserver.Redis) []*redis.Client {
	t.Helper()
	cs := make([]*redis.Client, len(nodes))
	for i, n := range nodes {
		cs[i] = redis.NewClient(&redis.Options{Addr: n.Addr(), Password: n.Password})
		c := cs[i]
		t.Cleanup(func() { _ = c.Close() })
	}
	return cs
}

// newClient makes a dlock Client over new go-redis clients of nodes.
func newClient(t testing.TB, nodes []*testserver.Redis, o redlock.Options, opts ...dlock.Option) (*dlock.Client, *redlock.Driver) {
	t.Helper()
	d, err := redlock.NewDriver(rawClients(t, nodes), o)
	if err != nil {
		t.Fatalf("NewDriver: %v", err)
	}
	c := dlock.NewClient(d, opts...)
	t.Cleanup(func() { _ = c.Close() })
	return c, d.(*redlock.Driver)
}

// urlHarness makes drivers from url, for the conformance suite.
func urlHarness(url string) redistest.URLHarness {
	return redistest.URLHarness{URL: url, Open: redlock.OpenURL}
}

// clientHarness makes drivers over go-redis clients built with default
// options.
type clientHarness struct {
	nodes []*testserver.Redis
	t     testing.TB
}

func (h clientHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	return redlock.NewDriver(rawClients(h.t, h.nodes), redlock.Options{})
}

func (clientHarness) Close() {}

// holders returns, for each node, the value of Redis key k ("" if none).
func holders(t testing.TB, ctx context.Context, cs []*redis.Client, k string) []string {
	t.Helper()
	out := make([]string, len(cs))
	for i, c := range cs {
		v, err := c.Get(ctx, k).Result()
		if err != nil && err != redis.Nil {
			t.Fatalf("GET %q on node %d: %v", k, i, err)
		}
		out[i] = v
	}
	return out
}

func count(vs []string, v string) int {
	n := 0
	for _, x := range vs {
		if x == v {
			n++
		}
	}
	return n
}
