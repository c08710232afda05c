package drivertest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// The subtests in this file call the driver.Locker methods directly, with no
// Client in between: the portable layer short-circuits some calls locally
// (a Refresh of a lock it knows is gone), so only a direct call shows what
// the driver itself does.

// driver makes a new driver from the harness, closed when the test ends.
func (s *suite) driver() driver.Locker {
	s.t.Helper()
	d, err := s.h.MakeDriver(s.ctx)
	if err != nil {
		s.t.Fatalf("MakeDriver: %v", err)
	}
	s.t.Cleanup(func() { _ = d.Close() })
	if s.caps == nil {
		caps := d.Capabilities()
		s.caps = &caps
	}
	return d
}

// acquire makes one attempt of d for key with token and wants a grant.
func (s *suite) acquire(d driver.Locker, key, token string, ttl time.Duration, meta string) driver.Result {
	s.t.Helper()
	res, err := d.Acquire(s.ctx, driver.Request{Key: key, Token: token, TTL: ttl, Metadata: meta})
	if err != nil || !res.Acquired {
		s.t.Fatalf("Acquire(%q) = %+v, %v; want a grant", key, res, err)
	}
	if res.Fence == 0 {
		s.t.Errorf("Acquire(%q) granted with fence 0, want > 0", key)
	}
	return res
}

func (s *suite) release(d driver.Locker, key, token string) {
	s.t.Helper()
	if err := d.Release(s.ctx, key, token); err != nil {
		s.t.Fatalf("Release(%q) by its owner: %v", key, err)
	}
}

// Another owner's Refresh and Release get ErrNotHeld and leave the owner's
// lock as it was; an Acquire of a held key is not granted, with a nil error
// and the holder's remaining TTL.
func testDriverForeignToken(t *testing.T, s *suite) {
	owner, other := s.driver(), s.driver()
	key := s.key("k")
	ttl := max(s.ttl, 10*time.Second)
	got := s.acquire(owner, key, "owner-token", ttl, "owner")

	if err := other.Refresh(s.ctx, key, "other-token", ttl); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("another owner's Refresh = %v, want ErrNotHeld", err)
	}
	if err := other.Release(s.ctx, key, "other-token"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("another owner's Release = %v, want ErrNotHeld", err)
	}
	// The same driver, with a token that is not the owner's.
	if err := owner.Release(s.ctx, key, "other-token"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("Release with a foreign token on the owner's driver = %v, want ErrNotHeld", err)
	}
	res, err := other.Acquire(s.ctx, driver.Request{Key: key, Token: "other-token", TTL: ttl, Metadata: "other"})
	if err != nil || res.Acquired {
		t.Fatalf("Acquire of a held key = %+v, %v; want not acquired and a nil error", res, err)
	}
	if res.HolderTTL < 0 || res.HolderTTL > ttl+time.Second {
		t.Errorf("Acquire of a held key: HolderTTL %v, want within [0, %v] (zero when unknown)", res.HolderTTL, ttl)
	}
	in, err := other.Inspect(s.ctx, key)
	if err != nil || !in.Held || in.Metadata != "owner" {
		t.Fatalf("after another owner's calls, Inspect = %+v, %v; want held by the owner", in, err)
	}
	if s.capabilities().Fencing && in.Fence != got.Fence {
		t.Errorf("after another owner's calls, fence %d, want the owner's %d", in.Fence, got.Fence)
	}
	if err := owner.Refresh(s.ctx, key, "owner-token", ttl); err != nil {
		t.Errorf("the owner's Refresh after another owner's calls: %v", err)
	}
	s.release(owner, key, "owner-token")
	if err := owner.Release(s.ctx, key, "owner-token"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("a second Release = %v, want ErrNotHeld", err)
	}
	if err := owner.Refresh(s.ctx, key, "owner-token", ttl); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("Refresh after Release = %v, want ErrNotHeld", err)
	}
}

// A re-acquire with the holder's own token keeps the fence (where declared);
// after release, Inspect's fence is the last one granted (or zero where the
// backend keeps none), and the next grant's is higher.
func testDriverFences(t *testing.T, s *suite) {
	d := s.driver()
	caps := s.capabilities()
	key := s.key("k")
	ttl := max(s.ttl, 10*time.Second)
	first := s.acquire(d, key, "t1", ttl, "")
	if caps.ReacquireWithToken {
		again := s.acquire(d, key, "t1", ttl, "")
		if again.Fence != first.Fence {
			t.Errorf("re-acquire with the same token: fence %d, want %d", again.Fence, first.Fence)
		}
	}
	s.release(d, key, "t1")
	in, err := d.Inspect(s.ctx, key)
	if err != nil || in.Held {
		t.Fatalf("Inspect after Release = %+v, %v; want free", in, err)
	}
	if in.Fence != first.Fence && in.Fence != 0 {
		t.Errorf("Inspect after Release: fence %d, want the last granted (%d) or 0", in.Fence, first.Fence)
	}
	second := s.acquire(d, key, "t2", ttl, "")
	if caps.Fencing && second.Fence <= first.Fence {
		t.Errorf("next grant's fence %d, want above %d", second.Fence, first.Fence)
	}
	s.release(d, key, "t2")
}

// testDriverBackendName: Capabilities().Backend names the backend for logs
// and metrics with a short lower-case word: never an address, a path or a
// credential.
func testDriverBackendName(t *testing.T, s *suite) {
	name := s.capabilities().Backend
	if name == "" || len(name) > 32 {
		t.Fatalf("Capabilities().Backend = %q, want a short name", name)
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_' {
			t.Fatalf("Capabilities().Backend = %q, want lower-case letters, digits, - and _ only", name)
		}
	}
}

// TTLs at the bounds the driver declares are granted and refreshed.
func testDriverTTLBounds(t *testing.T, s *suite) {
	d := s.driver()
	caps := s.capabilities()
	if caps.MaxTTL <= 0 || caps.MaxTTL > driver.MaxTTL {
		t.Fatalf("Capabilities().MaxTTL = %v, want in (0, %v]", caps.MaxTTL, driver.MaxTTL)
	}
	if caps.MinTTL != 0 && (caps.MinTTL < dlock.MinTTL || caps.MinTTL > caps.MaxTTL) {
		t.Fatalf("Capabilities().MinTTL = %v, want zero or in [%v, MaxTTL]", caps.MinTTL, dlock.MinTTL)
	}
	minTTL := max(caps.MinTTL, dlock.MinTTL)
	for _, ttl := range []time.Duration{caps.MaxTTL, caps.MaxTTL - time.Nanosecond, max(minTTL, s.ttl)} {
		key := s.key(fmt.Sprint(ttl))
		s.acquire(d, key, "t", ttl, "")
		if err := d.Refresh(s.ctx, key, "t", ttl); err != nil {
			t.Errorf("Refresh with TTL %v: %v", ttl, err)
		}
		in, err := d.Inspect(s.ctx, key)
		// (A backend that counts whole seconds, as etcd does, may show 0
		// for a lease of about a second.)
		if err != nil || !in.Held || in.TTL < 0 || in.TTL > ttl+time.Second || (in.TTL == 0 && ttl >= 10*time.Second) {
			t.Errorf("Inspect of a lock with TTL %v = %+v, %v; want held, 0 < TTL <= %v", ttl, in, err, ttl)
		}
		s.release(d, key, "t")
	}
}

// Keys are compared byte for byte: no normalisation, case folding, trimming,
// unescaping or pattern matching puts two different keys on one lock.
func testDriverByteKeys(t *testing.T, s *suite) {
	a, b := s.driver(), s.driver()
	ttl := max(s.ttl, 10*time.Second)
	pairs := [][2]string{
		{"nul\x00", "nul"},
		{"nul\x00a", "nul\x00b"},
		{"caf\u00e9", "cafe\u0301"}, // NFC vs NFD
		{"stra\u00dfe", "strasse"},  // ß vs ss
		{"a/b", "a%2Fb"},
		{"a", "A"},
		{"\u00c4", "\u00e4"}, // Ä vs ä (case-insensitive collations)
		{"k", "k "},
		{"i", "\u0130"}, // dotted capital I
		// SQL LIKE wildcards and quotes, Redis glob characters.
		{"%", "_"},
		{"a%", "ab"},
		{"a_c", "abc"},
		{"'", `"`},
		{"a*", "a?"},
		{"[a]", "a"},
	}
	for _, p := range pairs {
		k0, k1 := s.key(p[0]), s.key(p[1])
		s.acquire(a, k0, "t0", ttl, "first")
		res, err := b.Acquire(s.ctx, driver.Request{Key: k1, Token: "t1", TTL: ttl, Metadata: "second"})
		switch {
		case err != nil:
			t.Errorf("Acquire(%q) while %q is held: %v", p[1], p[0], err)
		case !res.Acquired:
			t.Errorf("holding %q blocks %q: they share a lock", p[0], p[1])
		default:
			for key, want := range map[string]string{k0: "first", k1: "second"} {
				if in, err := b.Inspect(s.ctx, key); err != nil || !in.Held || in.Metadata != want {
					t.Errorf("Inspect(%q) = %+v, %v; want held by %q", key, in, err, want)
				}
			}
			s.release(b, k1, "t1")
		}
		s.release(a, k0, "t0")
	}
}
