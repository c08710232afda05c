package drivertest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// testKeys checks that keys of every shape (slashes, dots, braces, control
// characters, Unicode, the longest allowed) can be locked and inspected, and
// that different keys never share a lock.
func testKeys(t *testing.T, s *suite) {
	a, b := s.client(), s.client()
	valid := []string{
		"plain", "unicode-ключ-鍵-🔒", "a/b", "a%2Fb", "/leading", "trailing/", "a//b",
		"{tag}", "x{tag}y", "{}", "..", "../escape", ".", "new\nline", "tab\tsp ace",
		"percent%", "back\\slash", "semi;colon", "quote'\"", "*?[", strings.Repeat("k", dlock.MaxKeyLen-len(s.prefix)),
	}
	for _, name := range valid {
		key := s.key(name)
		l, err := a.TryLock(s.ctx, key)
		if err != nil {
			t.Errorf("TryLock(%q): %v", name, err)
			continue
		}
		s.wantNotAcquired(b, key)
		if in, err := b.Inspect(s.ctx, key); err != nil || !in.Held {
			t.Errorf("Inspect(%q) = %+v, %v; want held", name, in, err)
		}
		s.unlock(l)
	}
	// Different keys never share a lock.
	pairs := [][2]string{
		{"a/b", "a%2Fb"}, {"a", "A"}, {"x", "x/"}, {"{a}", "a"}, {"..", "."},
		{"a\nb", "a b"}, {"p/q", "p_q"}, {"%", "%25"}, {"k", "k "},
	}
	for _, p := range pairs {
		l1 := s.tryLock(a, s.key(p[0]))
		l2, err := b.TryLock(s.ctx, s.key(p[1]))
		if err != nil {
			t.Errorf("holding %q blocks %q: %v", p[0], p[1], err)
		} else {
			s.unlock(l2)
		}
		s.unlock(l1)
	}
}

// testInvalidInput checks that invalid keys get ErrInvalidKey, invalid TTLs
// ErrInvalidTTL, and a Lock with a cancelled ctx context.Canceled.
func testInvalidInput(t *testing.T, s *suite) {
	a := s.client()
	for _, key := range []string{"", strings.Repeat("k", dlock.MaxKeyLen+1), "bad\xffutf8"} {
		if _, err := a.TryLock(s.ctx, key); !errors.Is(err, dlock.ErrInvalidKey) {
			t.Errorf("TryLock(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := a.Lock(s.ctx, key); !errors.Is(err, dlock.ErrInvalidKey) {
			t.Errorf("Lock(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := a.Inspect(s.ctx, key); !errors.Is(err, dlock.ErrInvalidKey) {
			t.Errorf("Inspect(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	for _, ttl := range []time.Duration{0, -time.Second, time.Nanosecond} {
		if _, err := a.TryLock(s.ctx, s.key("k"), dlock.WithTTL(ttl)); !errors.Is(err, dlock.ErrInvalidTTL) {
			t.Errorf("TryLock with TTL %v = %v, want ErrInvalidTTL", ttl, err)
		}
	}
	l := s.tryLock(a, s.key("k"))
	if err := l.Refresh(s.ctx, -time.Second); !errors.Is(err, dlock.ErrInvalidTTL) {
		t.Errorf("Refresh(-1s) = %v, want ErrInvalidTTL", err)
	}
	s.unlock(l)
	ctx, cancel := context.WithCancel(s.ctx)
	cancel()
	if _, err := a.Lock(ctx, s.key("k")); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with a cancelled ctx = %v, want context.Canceled", err)
	}
}

// testReacquireWithToken checks, for a driver that declares
// ReacquireWithToken, that TryLock with the holder's token takes the lock
// again with the same fence, another token does not, and the first handle's
// Unlock after the second released gets ErrNotHeld.
func testReacquireWithToken(t *testing.T, s *suite) {
	if !s.capabilities().ReacquireWithToken {
		t.Skip("driver does not declare ReacquireWithToken")
	}
	a, b := s.client(), s.client()
	key := s.key("k")
	l1 := s.tryLock(a, key, dlock.WithToken("restart-token-1"))
	l2, err := b.TryLock(s.ctx, key, dlock.WithToken("restart-token-1"))
	if err != nil {
		t.Fatalf("re-acquire with the holder's token: %v", err)
	}
	if l2.Fence() != l1.Fence() {
		t.Fatalf("re-acquire fence = %d, want the holder's %d", l2.Fence(), l1.Fence())
	}
	if _, err := b.TryLock(s.ctx, key, dlock.WithToken("other-token")); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock with another token = %v, want ErrNotAcquired", err)
	}
	s.unlock(l2)
	if err := l1.Unlock(s.ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Unlock by the first handle after the second released = %v, want ErrNotHeld", err)
	}
}
