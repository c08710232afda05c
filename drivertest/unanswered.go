package drivertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// The fault scenarios DownCallsEnd and BlackholeCallsEnd: every call on a
// server that cannot answer ends by its deadline with an error that says
// which server.

func testDownCallsEnd(t *testing.T, f *faults) {
	h := faultHarness[RestartHarness](f)
	c := f.client()
	withLock, without := f.calls(c, true), f.calls(c, false)
	h.Kill(t)
	defer h.Restart(t) // for the next scenario
	f.callsEnd(withLock, h.Addr(), true)
	f.callsEnd(without, h.Addr(), true)
}

func testBlackholeCallsEnd(t *testing.T, f *faults) {
	h := faultHarness[BlackholeHarness](f)
	used, fresh := f.calls(f.proxiedClient(h), true), f.calls(f.proxiedClient(h), false)
	h.Blackhole(t)
	f.callsEnd(used, h.ProxyAddr(), false)
	f.callsEnd(fresh, h.ProxyAddr(), false)
}

// call is one Client call of callsEnd.
type call struct {
	name string
	do   func(ctx context.Context) error
}

// calls returns c's calls for callsEnd: when withLock, the Refresh and
// Unlock of a lock c takes now (so c has used its connection); TryLock,
// Lock, Inspect, and List and ForceUnlock where the driver has them.
func (f *faults) calls(c *dlock.Client, withLock bool) []call {
	f.t.Helper()
	key := f.key("unanswered")
	var calls []call
	if withLock {
		// First, while the lease lasts (a short one on a backend whose
		// MaxTTL is a short session), refreshed only by these calls.
		ttl := min(30*time.Second, c.Capabilities().MaxTTL)
		held := f.tryLock(c, f.key("held"), dlock.WithTTL(ttl), dlock.WithAutoRefresh(false))
		calls = append(calls,
			call{"Refresh", func(ctx context.Context) error { return held.Refresh(ctx, 0) }},
			call{"Unlock", func(ctx context.Context) error { return held.Unlock(ctx) }})
	}
	calls = append(calls, []call{
		{"TryLock", func(ctx context.Context) error { _, err := c.TryLock(ctx, key); return err }},
		{"Lock", func(ctx context.Context) error { _, err := c.Lock(ctx, key); return err }},
		{"Inspect", func(ctx context.Context) error { _, err := c.Inspect(ctx, key); return err }},
	}...)
	if _, err := c.List(f.ctx, key); !errors.Is(err, dlock.ErrUnsupported) {
		calls = append(calls, call{"List", func(ctx context.Context) error { _, err := c.List(ctx, key); return err }})
	}
	if f.implements(func(d driver.Locker) bool { _, ok := d.(driver.ForceReleaser); return ok }) {
		calls = append(calls, call{"ForceUnlock", func(ctx context.Context) error { _, err := c.ForceUnlock(ctx, key); return err }})
	}
	return calls
}

// callsEnd checks that each call ends by a 500 ms deadline (and some slack)
// with an error that names (one of) addr and matches ErrUnavailable, or,
// unless refused (the server refuses connections), context.DeadlineExceeded.
func (f *faults) callsEnd(calls []call, addr string, refused bool) {
	f.t.Helper()
	for _, c := range calls {
		const d = 500 * time.Millisecond
		ctx, cancel := context.WithTimeout(f.ctx, d)
		start := time.Now()
		err := c.do(ctx)
		took := time.Since(start)
		cancel()
		switch {
		case took > d+1500*time.Millisecond:
			f.t.Errorf("%s took %v with a context of %v", c.name, took, d)
		case err == nil:
			f.t.Errorf("%s succeeded with the server unreachable", c.name)
		case refused && !errors.Is(err, dlock.ErrUnavailable):
			f.t.Errorf("%s = %v, want an error matching ErrUnavailable", c.name, err)
		case !errors.Is(err, dlock.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded):
			f.t.Errorf("%s = %v, want an error matching ErrUnavailable or context.DeadlineExceeded", c.name, err)
		case !namesOneOf(err, addr):
			f.t.Errorf("%s = %v, want an error naming %s", c.name, err, addr)
		}
	}
}

// namesOneOf reports whether err's message names one of addrs, a
// comma-separated list of addresses.
func namesOneOf(err error, addrs string) bool {
	for _, a := range strings.Split(addrs, ",") {
		if strings.Contains(fmt.Sprint(err), a) {
			return true
		}
	}
	return false
}
