package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
)

// ghostly is a client's connection to a store whose requests can land after
// the client gave up on them, as on a real network.
type ghostly struct {
	driver.Locker               // the client's connection
	server        driver.Locker // applies requests that land late
	mu            sync.Mutex
	late          time.Duration // > 0: an attempt whose ctx ends lands this much later
	lossy         int           // this attempt is granted, but its reply is lost
	attempts      int
	tokens        []string
	landed        sync.WaitGroup
}

func newGhostly(store *memdlock.Store) *ghostly {
	return &ghostly{Locker: store.Driver(), server: store.Driver()}
}

func (g *ghostly) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	g.mu.Lock()
	g.attempts++
	n, late, lossy := g.attempts, g.late, g.lossy
	g.tokens = append(g.tokens, req.Token)
	g.mu.Unlock()
	switch {
	case n == lossy:
		if _, err := g.server.Acquire(context.Background(), req); err != nil {
			return driver.Result{}, err
		}
		return driver.Result{}, fmt.Errorf("%w: test backend 127.0.0.1:1: connection reset", driver.ErrUnavailable)
	case late > 0:
		<-ctx.Done()
		g.landed.Add(1)
		go func() {
			defer g.landed.Done()
			time.Sleep(late)
			_, _ = g.server.Acquire(context.Background(), req)
		}()
		return driver.Result{}, ctx.Err()
	}
	return g.Locker.Acquire(ctx, req)
}

func (g *ghostly) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	return g.Locker.(driver.Notifier).WatchReleases(ctx, key)
}

func (g *ghostly) setLate(d time.Duration) {
	g.mu.Lock()
	g.late = d
	g.mu.Unlock()
}

// freeWithin fails t unless another client takes key within d.
func freeWithin(t *testing.T, other *dlock.Client, key string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		l, err := other.TryLock(t.Context(), key)
		if err == nil {
			_ = l.Unlock(t.Context())
			return
		}
		if !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryLock(%q) by another client: %v", key, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %q still held %v after the caller gave up: a grant nobody holds", key, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lockedBuffer is an io.Writer safe for a logger used by many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// An attempt whose ctx ends while it is in flight, and which the server then
// grants, is released in the background: the key is free again at once.
func TestUnknownOutcomeReleased(t *testing.T) {
	const token = "tok-do-not-log-0123456789"
	tests := []struct {
		name string
		call func(c *dlock.Client, ctx context.Context) error
	}{
		{"TryLock", func(c *dlock.Client, ctx context.Context) error {
			_, err := c.TryLock(ctx, "k")
			return err
		}},
		{"Lock", func(c *dlock.Client, ctx context.Context) error {
			_, err := c.Lock(ctx, "k")
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := memdlock.NewStore()
			g := newGhostly(store)
			g.setLate(50 * time.Millisecond)
			var logs lockedBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			c := dlock.NewClient(g, dlock.WithLogger(log), dlock.WithTokenGenerator(func() (string, error) { return token, nil }))
			defer c.Close()
			other := store.NewClient()
			defer other.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
			defer cancel()
			if err := tc.call(c, ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s with a ctx ending in flight = %v, want DeadlineExceeded", tc.name, err)
			}
			g.landed.Wait() // the grant has landed on the server
			freeWithin(t, other, "k", time.Second)
			if out := logs.String(); !strings.Contains(out, "outcome unknown") || strings.Contains(out, token) {
				t.Errorf("log = %q, want the cleanup at Debug and never the token", out)
			}
		})
	}
}

// The background release never frees a lock the same client holds with the
// same token (WithToken reuse).
func TestUnknownOutcomeKeepsOwnLock(t *testing.T) {
	ctx := t.Context()
	store := memdlock.NewStore()
	g := newGhostly(store)
	c := dlock.NewClient(g)
	defer c.Close()
	l, err := c.TryLock(ctx, "k", dlock.WithToken("shared-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	g.setLate(30 * time.Millisecond)
	actx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := c.TryLock(actx, "k", dlock.WithToken("shared-token")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second TryLock = %v, want DeadlineExceeded", err)
	}
	g.landed.Wait()
	time.Sleep(time.Second) // past the release schedule
	other := store.NewClient()
	defer other.Close()
	if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock by another client = %v, want ErrNotAcquired: the cleanup freed the client's own lock", err)
	}
	if err := l.Refresh(ctx, 0); err != nil {
		t.Fatalf("Refresh of the held lock after the cleanup: %v", err)
	}
}

// Close waits for the background releases: a process that exits right
// after Close leaves no grant behind.
func TestCloseWaitsForUnknownOutcomes(t *testing.T) {
	store := memdlock.NewStore()
	g := newGhostly(store)
	g.setLate(150 * time.Millisecond)
	c := dlock.NewClient(g)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	if _, err := c.TryLock(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("TryLock = %v, want Canceled", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	g.landed.Wait()
	other := store.NewClient()
	defer other.Close()
	l, err := other.TryLock(t.Context(), "k")
	if err != nil {
		t.Fatalf("TryLock right after Close = %v, want the late grant released before Close returned", err)
	}
	_ = l.Unlock(t.Context())
}

// A waiter that goes on after an attempt whose reply was lost (granted on
// the server all the same) gets the key, and the background release of the
// lost attempt never frees the lock it then holds.
func TestRetryAfterUnknownOutcome(t *testing.T) {
	for _, given := range []bool{false, true} {
		t.Run(fmt.Sprintf("WithToken=%v", given), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			store := memdlock.NewStore()
			holder := store.NewClient()
			defer holder.Close()
			hl, err := holder.TryLock(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			g := newGhostly(store)
			g.lossy = 2 // the attempt after the holder's release
			c := dlock.NewClient(g)
			defer c.Close()
			opts := []dlock.LockOption{dlock.WithRetry(dlock.LinearBackoff(10 * time.Millisecond))}
			if given {
				opts = append(opts, dlock.WithToken("given-token"))
			}
			go func() { time.Sleep(50 * time.Millisecond); _ = hl.Unlock(ctx) }()
			l, err := c.Lock(ctx, "k", opts...)
			if err != nil {
				t.Fatalf("Lock after a lost reply: %v", err)
			}
			defer l.Unlock(ctx)
			g.mu.Lock()
			lost := g.tokens[1]
			g.mu.Unlock()
			if !given && l.Token() == lost {
				t.Errorf("lock took the lost attempt's token: the next attempt must use a new one")
			}
			time.Sleep(time.Second) // past the release schedule
			if err := l.Err(); err != nil {
				t.Fatalf("lock after the cleanup: %v", err)
			}
			other := store.NewClient()
			defer other.Close()
			if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
				t.Fatalf("TryLock by another client = %v, want ErrNotAcquired: the cleanup freed the new lock", err)
			}
		})
	}
}
