package redisdlock_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
	"github.com/dlock-go/dlock/internal/redisengine/redistest"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// testCtx returns a context that ends after d or with the test.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// openURL opens a dlock Client from a redisdlock URL, closed when the test
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

// rawClient returns a plain go-redis client of srv, closed when the test
// ends.
func rawClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// newDriver makes a driver over a new go-redis client with go-redis's
// default options (no context deadlines on sockets, retries on), as an
// application would build it.
func newDriver(t testing.TB, addr string, o redisdlock.Options) (*redisengine.Engine, *redis.Client) {
	t.Helper()
	rdb := rawClient(t, addr)
	l, err := redisdlock.NewDriver(rdb, o)
	if err != nil {
		t.Fatalf("NewDriver: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l.(*redisengine.Engine), rdb
}

// urlHarness makes drivers from url, for the conformance suite.
func urlHarness(url string) redistest.URLHarness {
	return redistest.URLHarness{URL: url, Open: redisdlock.OpenURL}
}

// clientHarness makes drivers over go-redis clients built with default
// options.
type clientHarness struct {
	addr string
	t    testing.TB
}

func (h clientHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	rdb := redis.NewClient(&redis.Options{Addr: h.addr})
	h.t.Cleanup(func() { _ = rdb.Close() })
	return redisdlock.NewDriver(rdb, redisdlock.Options{})
}

func (clientHarness) Close() {}

// pubsubClients counts the server's pub/sub connections.
func pubsubClients(t testing.TB, srv *testserver.Redis) int {
	t.Helper()
	out, err := srv.Do(testCtx(t, 5*time.Second), "CLIENT", "LIST", "TYPE", "pubsub")
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) != "" {
			n++
		}
	}
	return n
}

// pubsubIDs returns the client ids of the server's pub/sub connections.
func pubsubIDs(t testing.TB, srv *testserver.Redis) []string {
	t.Helper()
	out, err := srv.Do(testCtx(t, 5*time.Second), "CLIENT", "LIST", "TYPE", "pubsub")
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	var ids []string
	for _, line := range strings.Split(out, "\n") {
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// waitFor polls cond every 5 ms until it holds or d passes.
var waitFor = redistest.WaitFor

// lockInBackground calls c.Lock and, when granted, Unlock, in a goroutine;
// the channel gets the first error (nil when both succeeded).
func lockInBackground(ctx context.Context, c *dlock.Client, key string, opts ...dlock.LockOption) <-chan error {
	got := make(chan error, 1)
	go func() {
		l, err := c.Lock(ctx, key, opts...)
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	return got
}
