package drivertest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// testInspect checks Inspect of a free key, of a held key (metadata, TTL and
// fence) and after the release.
func testInspect(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("k")
	in, err := b.Inspect(s.ctx, key)
	if err != nil || in.Held {
		t.Fatalf("Inspect of a fresh key = %+v, %v; want free", in, err)
	}
	l := s.tryLock(a, key, dlock.WithMetadata("owner=test-suite"), dlock.WithTTL(max(s.ttl, 10*time.Second)))
	in, err = b.Inspect(s.ctx, key)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if !in.Held || in.Metadata != "owner=test-suite" || in.TTL <= 0 || in.TTL > max(s.ttl, 10*time.Second)+time.Second {
		t.Fatalf("Inspect of a held key = %+v; want held, metadata %q, 0 < TTL <= %v", in, "owner=test-suite", max(s.ttl, 10*time.Second))
	}
	if in.Fence != l.Fence() && s.capabilities().Fencing {
		t.Fatalf("Inspect fence = %d, want %d", in.Fence, l.Fence())
	}
	s.unlock(l)
	if in, err = b.Inspect(s.ctx, key); err != nil || in.Held {
		t.Fatalf("Inspect after Unlock = %+v, %v; want free", in, err)
	}
}

// testDo checks that Do holds the key while fn runs, returns fn's error and
// releases the key afterwards.
func testDo(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("k")
	ran := false
	err := a.Do(s.ctx, key, func(ctx context.Context) error {
		ran = true
		s.wantNotAcquired(b, key)
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("Do = %v, ran = %v; want nil, true", err, ran)
	}
	want := errors.New("fn failed")
	if err := a.Do(s.ctx, key, func(context.Context) error { return want }); !errors.Is(err, want) {
		t.Fatalf("Do = %v, want fn's error", err)
	}
	// Released after Do, even when fn failed.
	l := s.tryLock(b, key)
	s.unlock(l)
}

// testDoLost checks that a lock lapsing under Do cancels fn's ctx with the
// cause ErrLost, and that Do returns ErrLost.
func testDoLost(t *testing.T, s *suite) {
	a := s.client()
	start := time.Now()
	err := a.Do(s.ctx, s.key("k"), func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			if cause := context.Cause(ctx); !errors.Is(cause, dlock.ErrLost) {
				return fmt.Errorf("fn ctx cause = %v, want ErrLost", cause)
			}
			return nil
		case <-time.After(s.expiryWait()):
			return errors.New("fn ctx not cancelled after the lock's TTL")
		}
	}, dlock.WithTTL(s.ttl), dlock.WithAutoRefresh(false))
	if !errors.Is(err, dlock.ErrLost) {
		t.Fatalf("Do with a lapsing lock = %v (after %v), want ErrLost", err, time.Since(start))
	}
}

// testClose checks that Client.Close releases the held locks and closes
// their Done, that a TryLock afterwards gets ErrClosed, and that a second
// Close returns nil.
func testClose(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	key := s.key("k")
	l := s.tryLock(a, key)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s.waitDone(l, 5*time.Second)
	if _, err := a.TryLock(s.ctx, s.key("other")); !errors.Is(err, dlock.ErrClosed) {
		t.Fatalf("TryLock after Close = %v, want ErrClosed", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Close released the lock.
	lb := s.tryLock(b, key)
	s.unlock(lb)
}
