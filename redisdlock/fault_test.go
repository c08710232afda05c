package redisdlock_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// TestRestartLosesLock: Redis restarts without persistence while a lock is
// held with auto-refresh. The next refresh finds the key gone; the holder
// sees the loss, and new locks work once Redis is back.
func TestRestartLosesLock(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 60*time.Second)
	for _, tc := range []struct {
		name string
		c    *dlock.Client
	}{
		{"URL", openURL(t, srv.URL())},
		{"NewDriver", func() *dlock.Client {
			d, _ := newDriver(t, srv.Addr(), redisdlock.Options{})
			return dlock.NewClient(d)
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := tc.c.Lock(ctx, "k", dlock.WithTTL(600*time.Millisecond))
			if err != nil {
				t.Fatalf("Lock: %v", err)
			}
			srv.Restart()
			select {
			case <-l.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("Done not closed within 10s of the restart")
			}
			if err := l.Err(); !errors.Is(err, dlock.ErrLost) {
				t.Fatalf("Err = %v, want ErrLost", err)
			}
			if err := l.Unlock(ctx); !errors.Is(err, dlock.ErrNotHeld) {
				t.Fatalf("Unlock after the loss = %v, want ErrNotHeld", err)
			}
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			l2, err := tc.c.Lock(lctx, "k")
			if err != nil {
				t.Fatalf("Lock after the restart: %v", err)
			}
			if l2.Fence() <= l.Fence() {
				t.Errorf("fence after the restart = %d, want > %d (clock-based after the counter was lost)", l2.Fence(), l.Fence())
			}
			if err := l2.Unlock(ctx); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
		})
	}
}

// TestPartitionDuringRefresh: the holder reaches Redis through a proxy that
// stops forwarding (and optionally resets its connections). The holder's
// Done must close before the server's own expiry of the key (read with
// PEXPIRETIME, on the same machine's clock), so that no
// other owner can be granted the key while this one still believes it
// holds it. A reset alone, after which the proxy works again, must not lose
// the lock.
func TestPartitionDuringRefresh(t *testing.T) {
	srv := testserver.StartRedis(t)
	rdb := rawClient(t, srv.Addr())
	// The margin between the client's deadline and the server's expiry is
	// the drift allowance, TTL/100 + 2 ms: 32 ms here.
	const ttl = 3 * time.Second
	blackhole := func(p *testserver.Proxy) { p.Blackhole(true) }
	resetBlackhole := func(p *testserver.Proxy) { p.ResetAll(); p.Blackhole(true) }
	resetOnly := func(p *testserver.Proxy) { p.ResetAll() }
	tests := []struct {
		name     string
		viaURL   bool
		fault    func(p *testserver.Proxy)
		wantLost bool
	}{
		{"blackhole/URL", true, blackhole, true},
		{"blackhole/NewDriver", false, blackhole, true},
		{"reset then blackhole/URL", true, resetBlackhole, true},
		{"reset then blackhole/NewDriver", false, resetBlackhole, true},
		{"reset only/URL", true, resetOnly, false},
		{"reset only/NewDriver", false, resetOnly, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 30*time.Second)
			proxy := testserver.StartProxy(t, srv.Addr())
			// The moment the lock declares its loss, from the event hook.
			var lostAt atomic.Pointer[time.Time]
			hook := dlock.WithEventHook(func(e dlock.Event) {
				if e.Kind == dlock.EventLost {
					now := time.Now()
					lostAt.Store(&now)
				}
			})
			var c *dlock.Client
			if tc.viaURL {
				c = openURL(t, "redis://"+proxy.Addr(), hook)
			} else {
				d, _ := newDriver(t, proxy.Addr(), redisdlock.Options{})
				c = dlock.NewClient(d, hook)
				t.Cleanup(func() { _ = c.Close() })
			}
			key := "k-" + strings.NewReplacer(" ", "-", "/", "-").Replace(tc.name)
			l, err := c.TryLock(ctx, key, dlock.WithTTL(ttl))
			if err != nil {
				t.Fatalf("TryLock: %v", err)
			}
			// Let a refresh or two pass, then cut in the middle of the
			// refresh cycle.
			time.Sleep(ttl/3 + ttl/6)
			tc.fault(proxy)
			// The server's own expiry time of the key, in Unix ms.
			expireAt, err := rdb.Do(ctx, "PEXPIRETIME", key).Int64()
			if err != nil || expireAt <= 0 {
				t.Fatalf("PEXPIRETIME = %d, %v", expireAt, err)
			}
			if !tc.wantLost {
				select {
				case <-l.Done():
					t.Fatalf("lock lost after a connection reset with the server reachable: %v", l.Err())
				case <-time.After(ttl + ttl/4):
				}
				if err := l.Unlock(ctx); err != nil {
					t.Fatalf("Unlock: %v", err)
				}
				return
			}
			// Ordering, not timing. First, the client's validity deadline
			// lies before the server's expiry of the key.
			serverExpiry := time.UnixMilli(expireAt)
			if deadline := l.Deadline(); !deadline.Before(serverExpiry) {
				t.Errorf("validity deadline %v is not before the server's expiry %v", deadline.Format(time.StampMicro), serverExpiry.Format(time.StampMicro))
			}
			// Second, a goroutine that wakes when the server frees the key
			// finds Done already closed, unless this process's timers ran
			// later than the whole margin (a starved machine), which the
			// event hook's timestamp shows.
			time.Sleep(time.Until(serverExpiry))
			doneInTime := isDone(l)
			select {
			case <-l.Done():
			case <-time.After(3 * ttl):
				t.Fatalf("Done not closed %v after the partition", 3*ttl)
			}
			if err := l.Err(); !errors.Is(err, dlock.ErrLost) {
				t.Fatalf("Err = %v, want ErrLost", err)
			}
			deadline, lost := l.Deadline(), lostAt.Load()
			if lost == nil {
				t.Fatal("no EventLost")
			}
			late, margin := lost.Sub(deadline), serverExpiry.Sub(deadline)
			switch {
			case doneInTime:
				t.Logf("loss declared %v before the server's expiry", serverExpiry.Sub(*lost))
			case late < margin:
				t.Errorf("Done still open when the server's TTL ran out, though the loss was declared %v after the deadline (margin %v)", late, margin)
			default:
				t.Logf("loaded machine: the expiry timer ran %v after the deadline, past the %v margin; deadline ordering checked above", late, margin)
			}
			proxy.Blackhole(false)
		})
	}
}

// TestUnreachable: with Redis down (a closed port) or silent (a blackholed
// proxy), Lock and TryLock return within the caller's deadline with an
// error that names the address and never the password.
func TestUnreachable(t *testing.T) {
	const password = "hunter2-secret"
	closedPort := testserver.FreePort(t)
	closedAddr := testserver.Addr(closedPort)
	srv := testserver.StartRedis(t)
	silent := testserver.StartProxy(t, srv.Addr())
	silent.Blackhole(true)

	type client struct {
		name string
		c    *dlock.Client
		addr string
	}
	var clients []client
	for _, target := range []string{closedAddr, silent.Addr()} {
		clients = append(clients, client{"URL " + target, openURL(t, "redis://user:"+password+"@"+target+"/0"), target})
		rdb := redis.NewClient(&redis.Options{Addr: target, Password: password})
		t.Cleanup(func() { _ = rdb.Close() })
		c, err := redisdlock.NewClient(rdb, redisdlock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients = append(clients, client{"NewClient " + target, c, target})
	}
	ops := []struct {
		name string
		do   func(ctx context.Context, c *dlock.Client) error
	}{
		{"TryLock", func(ctx context.Context, c *dlock.Client) error { _, err := c.TryLock(ctx, "k"); return err }},
		{"Lock", func(ctx context.Context, c *dlock.Client) error { _, err := c.Lock(ctx, "k"); return err }},
		{"Inspect", func(ctx context.Context, c *dlock.Client) error { _, err := c.Inspect(ctx, "k"); return err }},
		{"List", func(ctx context.Context, c *dlock.Client) error { _, err := c.List(ctx, ""); return err }},
		{"ForceUnlock", func(ctx context.Context, c *dlock.Client) error { _, err := c.ForceUnlock(ctx, "k"); return err }},
	}
	for _, cl := range clients {
		for _, op := range ops {
			t.Run(cl.name+"/"+op.name, func(t *testing.T) {
				const deadline = 500 * time.Millisecond
				ctx, cancel := context.WithTimeout(t.Context(), deadline)
				defer cancel()
				start := time.Now()
				err := op.do(ctx, cl.c)
				took := time.Since(start)
				if err == nil {
					t.Fatal("succeeded against an unreachable server")
				}
				if !errors.Is(err, dlock.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("err = %v, want ErrUnavailable or DeadlineExceeded", err)
				}
				if !strings.Contains(err.Error(), cl.addr) {
					t.Errorf("err = %q, want it to name %s", err, cl.addr)
				}
				if strings.Contains(err.Error(), password) {
					t.Errorf("err = %q shows the password", err)
				}
				// Bounded by the deadline, with slack for a loaded machine.
				if took > deadline+time.Second {
					t.Errorf("returned after %v, deadline was %v", took, deadline)
				}
			})
		}
	}
}

// TestSlowReply: with a proxy adding latency, a grant whose reply comes
// after its validity deadline is not a grant, and the key is given back.
func TestSlowReply(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	proxy := testserver.StartProxy(t, srv.Addr())
	c := openURL(t, "redis://"+proxy.Addr())
	direct := openURL(t, srv.URL())
	// Warm the connection, so that the dial does not count.
	if _, err := c.Inspect(ctx, "warm"); err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	proxy.SetLatency(40 * time.Millisecond) // 80 ms round trip
	_, err := c.TryLock(ctx, "slow", dlock.WithTTL(50*time.Millisecond))
	if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock with a 50ms TTL over an 80ms round trip = %v, want ErrNotAcquired", err)
	}
	if in, err := direct.Inspect(ctx, "slow"); err != nil || in.Held {
		t.Fatalf("after the late grant: Inspect = %+v, %v; want free", in, err)
	}
	l, err := c.TryLock(ctx, "slow", dlock.WithTTL(2*time.Second))
	if err != nil {
		t.Fatalf("TryLock with a 2s TTL over an 80ms round trip: %v", err)
	}
	proxy.SetLatency(0)
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// TestAbandonedAcquire: an acquire whose caller gave up before the reply
// (the server was silent) is granted when the server finally runs it; the
// driver then gives the key back instead of leaving it held for its TTL.
func TestAbandonedAcquire(t *testing.T) {
	srv := testserver.StartRedis(t)
	ctx := testCtx(t, 30*time.Second)
	proxy := testserver.StartProxy(t, srv.Addr())
	d, _ := newDriver(t, proxy.Addr(), redisdlock.Options{}) // go-redis defaults: no socket deadlines from ctx
	c := dlock.NewClient(d)
	t.Cleanup(func() { _ = c.Close() })
	direct := openURL(t, srv.URL())
	// Warm the connection and the server's script cache.
	if l, err := c.TryLock(ctx, "warm"); err != nil {
		t.Fatalf("TryLock: %v", err)
	} else if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	proxy.Blackhole(true)
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := c.TryLock(tctx, "k", dlock.WithTTL(time.Minute))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("TryLock against a silent server = %v, want DeadlineExceeded", err)
	}
	proxy.Blackhole(false)
	// The held request now reaches the server and is granted; the driver
	// sees the late reply and releases.
	waitFor(t, 10*time.Second, "abandoned grant released", func() bool {
		in, err := direct.Inspect(ctx, "k")
		return err == nil && !in.Held && in.Fence > 0
	})
}
