package drivertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// suite is one subtest's state: its harness, the short TTL the expiry tests
// use, a key prefix of its own and the driver's capabilities, read from the
// first client made.
type suite struct {
	t      *testing.T
	ctx    context.Context
	h      Harness
	ttl    time.Duration
	prefix string
	caps   *driver.Capabilities
}

// newSuite makes t's harness with newHarness and a suite over it, whose
// context ends after timeout or with t. The suite's short TTL is 300 ms or
// the harness's ShortTTL.
func newSuite(t *testing.T, newHarness HarnessMaker, timeout time.Duration) *suite {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	h, err := newHarness(ctx, t)
	if err != nil {
		t.Fatalf("making harness: %v", err)
	}
	t.Cleanup(h.Close)
	s := &suite{t: t, ctx: ctx, h: h, ttl: 300 * time.Millisecond, prefix: uniquePrefix(t)}
	if st, ok := h.(ShortTTLer); ok {
		s.ttl = st.ShortTTL()
	}
	return s
}

// uniquePrefix returns a key prefix for t's subtest: its name and random hex
// digits, so that runs never share keys.
func uniquePrefix(t *testing.T) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := t.Name()
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return "dt-" + name + "-" + hex.EncodeToString(b[:]) + "-"
}

// key returns the subtest's key called name.
func (s *suite) key(name string) string { return s.prefix + name }

// client makes a new dlock.Client over a new driver from the harness.
func (s *suite) client(opts ...dlock.Option) *dlock.Client {
	s.t.Helper()
	d, err := s.h.MakeDriver(s.ctx)
	if err != nil {
		s.t.Fatalf("MakeDriver: %v", err)
	}
	c := dlock.NewClient(d, opts...)
	s.t.Cleanup(func() { _ = c.Close() })
	if s.caps == nil {
		caps := c.Capabilities()
		s.caps = &caps
	}
	return c
}

// capabilities returns the driver's Capabilities, making a client to read
// them when none was made yet.
func (s *suite) capabilities() driver.Capabilities {
	if s.caps == nil {
		s.client()
	}
	return *s.caps
}

// tryLock takes key with c.TryLock and fails the test when it is not taken.
func (s *suite) tryLock(c *dlock.Client, key string, opts ...dlock.LockOption) *dlock.Lock {
	s.t.Helper()
	l, err := c.TryLock(s.ctx, key, opts...)
	if err != nil {
		s.t.Fatalf("TryLock(%q): %v", key, err)
	}
	return l
}

// unlock releases l and fails the test on an error.
func (s *suite) unlock(l *dlock.Lock) {
	s.t.Helper()
	if err := l.Unlock(s.ctx); err != nil {
		s.t.Fatalf("Unlock(%q): %v", l.Key(), err)
	}
}

// wantNotAcquired fails the test unless c.TryLock of key fails with
// ErrNotAcquired.
func (s *suite) wantNotAcquired(c *dlock.Client, key string) {
	s.t.Helper()
	l, err := c.TryLock(s.ctx, key)
	if err == nil {
		_ = l.Unlock(s.ctx)
		s.t.Fatalf("TryLock(%q) succeeded while another owner holds it", key)
	}
	if !errors.Is(err, dlock.ErrNotAcquired) {
		s.t.Fatalf("TryLock(%q) = %v, want an error matching ErrNotAcquired", key, err)
	}
}

// waitDone waits for l.Done with a deadline of d.
func (s *suite) waitDone(l *dlock.Lock, d time.Duration) {
	s.t.Helper()
	select {
	case <-l.Done():
	case <-time.After(d):
		s.t.Fatalf("Done of %q not closed after %v", l.Key(), d)
	}
}

// isDone reports whether l's Done channel is closed, without waiting.
func isDone(l *dlock.Lock) bool {
	select {
	case <-l.Done():
		return true
	default:
		return false
	}
}

// expiryWait bounds how long a takeover after a lapsed lease may take.
func (s *suite) expiryWait() time.Duration { return 5*s.ttl + 5*time.Second }
