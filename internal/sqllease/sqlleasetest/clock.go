// Package sqlleasetest holds the test shapes the SQL lock drivers share.
package sqlleasetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// Clock is what RunClockTest needs of a SQL backend whose server and
// clients run in time zones far apart.
type Clock struct {
	// West and East are Clients on one server whose sessions run in time
	// zones about a day apart, neither the server's.
	West, East *dlock.Client
	// ServerLeft returns the lease of key as the server itself sees it: its
	// expiry minus the server's now.
	ServerLeft func(ctx context.Context, key string) (time.Duration, error)
	// Args returns the arguments of every statement West and East sent.
	Args func() []any
}

// RunClockTest shows that leases follow the server's clock only: a lease
// taken with a 10 s TTL is, by the server's own reckoning, just under 10 s;
// the other client, in another time zone, sees it held with that TTL and
// cannot take it; a 300 ms lease lapses on time and the other client takes
// it over and refreshes it; and the clients never sent a time, only keys,
// tokens, text and TTLs ([]byte, string, int64 or nil arguments).
func RunClockTest(t *testing.T, ctx context.Context, c Clock) {
	t.Helper()
	const ttl = 10 * time.Second
	l, err := c.West.TryLock(ctx, "clock", dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	left, err := c.ServerLeft(ctx, "clock")
	if err != nil {
		t.Fatal(err)
	}
	if left <= ttl-2*time.Second || left > ttl {
		t.Errorf("server-side lease = %v, want just under %v", left, ttl)
	}
	in, err := c.East.Inspect(ctx, "clock")
	if err != nil || !in.Held || in.TTL <= ttl-2*time.Second || in.TTL > ttl {
		t.Errorf("Inspect from another time zone = %+v, %v; want held with TTL just under %v", in, err, ttl)
	}
	if _, err := c.East.TryLock(ctx, "clock"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("TryLock from another time zone = %v, want ErrNotAcquired", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// A short lease lapses on time whatever the zones.
	if _, err := c.West.TryLock(ctx, "clock-short", dlock.WithTTL(300*time.Millisecond), dlock.WithAutoRefresh(false)); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	l2, err := c.East.Lock(wctx, "clock-short", dlock.WithRetry(dlock.LinearBackoff(50*time.Millisecond)))
	if err != nil {
		t.Fatalf("takeover after a 300ms lease across time zones: %v", err)
	}
	if err := l2.Refresh(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	args := c.Args()
	if len(args) == 0 {
		t.Fatal("no statement arguments recorded")
	}
	for _, a := range args {
		switch a.(type) {
		case []byte, string, int64, nil:
		default:
			t.Errorf("driver sent an argument of type %T (%v); want only keys, tokens, text and TTLs", a, a)
		}
	}
}
