package drivertest

import (
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// testDriverSetMetadata: a driver.MetadataSetter's SetMetadata changes the
// metadata of the holder's grant in place (Inspect reports it, with the
// same fence and a lease that was not extended), and refuses with
// ErrNotHeld, changing nothing, a token that does not hold the key, a key
// nobody holds, and a released grant.
func testDriverSetMetadata(t *testing.T, s *suite) {
	if !s.implements(func(d driver.Locker) bool { _, ok := d.(driver.MetadataSetter); return ok }) {
		t.Skip("the driver does not implement driver.MetadataSetter")
	}
	d := s.driver()
	ms := d.(driver.MetadataSetter)
	key := s.key("meta")
	ttl := max(s.capabilities().MinTTL, 10*time.Second)
	res, err := d.Acquire(s.ctx, driver.Request{Key: key, Token: "meta-a", TTL: ttl, Metadata: "first"})
	if err != nil || !res.Acquired {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	if err := ms.SetMetadata(s.ctx, key, "meta-b", "intruder"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("SetMetadata with another token = %v, want ErrNotHeld", err)
	}
	if err := ms.SetMetadata(s.ctx, s.key("meta-free"), "meta-a", "nobody"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("SetMetadata of a free key = %v, want ErrNotHeld", err)
	}
	in, err := d.Inspect(s.ctx, key)
	if err != nil || !in.Held || in.Metadata != "first" {
		t.Fatalf("Inspect after refused SetMetadata = %+v, %v; want held with %q", in, err, "first")
	}
	before := in.TTL
	if err := ms.SetMetadata(s.ctx, key, "meta-a", "second"); err != nil {
		t.Fatalf("SetMetadata by the holder: %v", err)
	}
	in, err = d.Inspect(s.ctx, key)
	if err != nil || !in.Held || in.Metadata != "second" || in.Fence != res.Fence {
		t.Fatalf("Inspect after SetMetadata = %+v, %v; want held with %q and fence %d", in, err, "second", res.Fence)
	}
	// The lease is not extended: whole-second backends may round, so allow
	// one second.
	if in.TTL > before+time.Second {
		t.Errorf("TTL after SetMetadata = %v, before %v: SetMetadata extended the lease", in.TTL, before)
	}
	if err := d.Refresh(s.ctx, key, "meta-a", ttl); err != nil {
		t.Errorf("Refresh after SetMetadata: %v", err)
	}
	if err := d.Release(s.ctx, key, "meta-a"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := ms.SetMetadata(s.ctx, key, "meta-a", "late"); !errors.Is(err, driver.ErrNotHeld) {
		t.Errorf("SetMetadata after Release = %v, want ErrNotHeld", err)
	}
	if in, err := d.Inspect(s.ctx, key); err != nil || in.Held {
		t.Errorf("Inspect after a late SetMetadata = %+v, %v; want free", in, err)
	}
}
