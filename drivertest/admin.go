package drivertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// implements reports whether the harness's drivers pass ok.
func (s *suite) implements(ok func(driver.Locker) bool) bool {
	s.t.Helper()
	d, err := s.h.MakeDriver(s.ctx)
	if err != nil {
		s.t.Fatalf("MakeDriver: %v", err)
	}
	defer d.Close()
	return ok(d)
}

func testList(t *testing.T, s *suite) {
	if !s.implements(func(d driver.Locker) bool { _, ok := d.(driver.Lister); return ok }) {
		t.Skip("the driver does not implement driver.Lister")
	}
	a, b, w := s.client(), s.client(), s.client()
	ttl := max(s.ttl, 10*time.Second)
	// Names with the characters of SQL LIKE and Redis MATCH patterns: a
	// prefix is literal.
	names := []string{"a", "b/1", "b/2", "p%q", "pXq", "p_q", "g*1", "gg1", "g?1", "g[1]", `g\1`, "ü/ß"}
	held := map[string]*dlock.Lock{}
	for _, n := range names {
		held[s.key(n)] = s.tryLock(a, s.key(n), dlock.WithTTL(ttl), dlock.WithMetadata("list="+n))
	}
	// Neither a released key nor a waiter's queue entry is listed.
	s.unlock(s.tryLock(a, s.key("released"), dlock.WithTTL(ttl)))
	wctx, wcancel := context.WithCancel(s.ctx)
	waited := make(chan error, 1)
	go func() {
		l, err := w.Lock(wctx, s.key("a"))
		if err == nil {
			_ = l.Unlock(s.ctx)
			err = errors.New("the waiter got a held key")
		}
		waited <- err
	}()
	defer func() {
		wcancel()
		select {
		case err := <-waited:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("waiter: %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("waiter did not return 10 s after its cancel")
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the waiter queue, where it does

	sorted := slices.Clone(names)
	slices.Sort(sorted)
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"b/", []string{"b/1", "b/2"}},
		{"b/1", []string{"b/1"}},
		{"p%", []string{"p%q"}},
		{"p_", []string{"p_q"}},
		{"g*", []string{"g*1"}},
		{"g?", []string{"g?1"}},
		{"g[", []string{"g[1]"}},
		{`g\`, []string{`g\1`}},
		{"ü", []string{"ü/ß"}},
		{"released", nil},
		{"none", nil},
	} {
		infos, err := b.List(s.ctx, s.prefix+tc.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		var got []string
		for _, in := range infos {
			got = append(got, strings.TrimPrefix(in.Key, s.prefix))
			l := held[in.Key]
			switch {
			case l == nil:
				t.Errorf("List(%q) returned %q, which is not held", tc.prefix, in.Key)
			case !in.Held || in.TTL <= 0 || in.TTL > ttl+time.Second:
				t.Errorf("List(%q): %q = %+v; want held with 0 < TTL <= %v", tc.prefix, in.Key, in, ttl)
			case in.Metadata != "list="+strings.TrimPrefix(in.Key, s.prefix):
				t.Errorf("List(%q): %q has metadata %q, want %q", tc.prefix, in.Key, in.Metadata, "list="+strings.TrimPrefix(in.Key, s.prefix))
			case s.capabilities().Fencing && in.Fence != l.Fence():
				t.Errorf("List(%q): %q has fence %d, want %d", tc.prefix, in.Key, in.Fence, l.Fence())
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("List(prefix+%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}

	// The whole namespace: ours among the rest, in key order.
	all, err := b.List(s.ctx, "")
	if err != nil {
		t.Fatalf(`List(""): %v`, err)
	}
	if !slices.IsSortedFunc(all, func(x, y dlock.Info) int { return strings.Compare(x.Key, y.Key) }) {
		t.Errorf(`List("") is not in key order`)
	}
	found := 0
	for _, in := range all {
		if held[in.Key] != nil {
			found++
		}
	}
	if found != len(names) {
		t.Errorf(`List("") has %d of the %d keys held`, found, len(names))
	}

	// More keys than a batch.
	const many = 250
	for i := range many {
		s.tryLock(a, s.key(fmt.Sprintf("many/%03d", i)), dlock.WithTTL(ttl))
	}
	infos, err := b.List(s.ctx, s.key("many/"))
	if err != nil {
		t.Fatalf("List(many/): %v", err)
	}
	if len(infos) != many {
		t.Fatalf("List(many/) returned %d keys, want %d", len(infos), many)
	}
	for i, in := range infos {
		if want := s.key(fmt.Sprintf("many/%03d", i)); in.Key != want {
			t.Fatalf("List(many/)[%d] = %q, want %q", i, in.Key, want)
		}
	}

	if _, err := b.List(s.ctx, string([]byte{0xff})); !errors.Is(err, dlock.ErrInvalidKey) {
		t.Errorf("List with an invalid UTF-8 prefix = %v, want ErrInvalidKey", err)
	}
}

func testForceRelease(t *testing.T, s *suite) {
	if !s.implements(func(d driver.Locker) bool { _, ok := d.(driver.ForceReleaser); return ok }) {
		t.Skip("the driver does not implement driver.ForceReleaser")
	}
	a, op, w := s.client(), s.client(), s.client()
	key := s.key("k")
	// Long enough that only the forced release can free it in time.
	ttl := max(s.ttl, 20*time.Second)
	l := s.tryLock(a, key, dlock.WithTTL(ttl), dlock.WithMetadata("owner=a"), dlock.WithAutoRefresh(false))

	type result struct {
		l   *dlock.Lock
		err error
	}
	got := make(chan result, 1)
	go func() {
		wl, err := w.Lock(s.ctx, key, dlock.WithTTL(ttl))
		got <- result{wl, err}
	}()
	time.Sleep(100 * time.Millisecond) // let the waiter queue, where it does

	in, err := op.ForceUnlock(s.ctx, key)
	if err != nil {
		t.Fatalf("ForceUnlock of a held key: %v", err)
	}
	if !in.Held || in.Metadata != "owner=a" || in.Key != key {
		t.Errorf("ForceUnlock returned %+v; want the holder's info (held, metadata %q)", in, "owner=a")
	}
	if s.capabilities().Fencing && in.Fence != l.Fence() {
		t.Errorf("ForceUnlock returned fence %d, want the holder's %d", in.Fence, l.Fence())
	}
	var wl *dlock.Lock
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("waiter after ForceUnlock: %v", r.err)
		}
		wl = r.l
	case <-time.After(ttl / 2):
		t.Fatalf("waiter did not get the key within %v of ForceUnlock (the holder's TTL is %v)", ttl/2, ttl)
	}
	if s.capabilities().Fencing && wl.Fence() <= l.Fence() {
		t.Errorf("fence after ForceUnlock = %d, want above the freed holder's %d", wl.Fence(), l.Fence())
	}
	// The freed holder finds out at its next refresh.
	if err := l.Refresh(s.ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("the freed holder's Refresh = %v, want ErrNotHeld", err)
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrLost) {
		t.Errorf("the freed holder's Err = %v, want ErrLost", err)
	}
	// Its Unlock must not free the new holder's lock.
	_ = l.Unlock(s.ctx)
	s.wantNotAcquired(op, key)
	s.unlock(wl)

	in, err = op.ForceUnlock(s.ctx, key)
	if err != nil || in.Held {
		t.Errorf("ForceUnlock of a free key = %+v, %v; want not held, nil", in, err)
	}
	if _, err := op.ForceUnlock(s.ctx, ""); !errors.Is(err, dlock.ErrInvalidKey) {
		t.Errorf(`ForceUnlock("") = %v, want ErrInvalidKey`, err)
	}
}

// CheckForceUnlockWakes takes key on holder with a TTL of an hour, starts a
// Lock of key on waiter whose backoff is an hour too, lets it settle for
// settle, frees the key with op.ForceUnlock, and fails the test unless the
// waiter gets the key within 10 s: only a release notification of the forced
// release can wake it in time. waiter may be op itself where the backend
// notifies only the waiters of the client that released.
func CheckForceUnlockWakes(ctx context.Context, t testing.TB, holder, op, waiter *dlock.Client, key string, settle time.Duration) {
	t.Helper()
	if _, err := holder.TryLock(ctx, key, dlock.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		l, err := waiter.Lock(wctx, key, dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	time.Sleep(settle) // let the waiter watch the key's releases
	if in, err := op.ForceUnlock(ctx, key); err != nil || !in.Held {
		t.Fatalf("ForceUnlock = %+v, %v; want held, nil", in, err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v (want it woken by the forced release)", err)
	}
}
