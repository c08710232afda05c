package zkdlock

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestKillOneOfThree: kill -9 of the ensemble member the holder is connected
// to loses no lock; locks keep working on the remaining two.
func TestKillOneOfThree(t *testing.T) {
	z := testserver.StartZooKeeperEnsemble(t, testserver.ZooKeeperConfig{}, 3)
	url := "zk://" + z.Addr() + "/kill3?session_timeout=10s"
	d := openDriver(t, url)
	c := dlock.NewClient(d, dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
	t.Cleanup(func() { _ = c.Close() })
	other := openClient(t, url, dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	victim := -1
	for i, a := range z.Addrs() {
		if a == d.conn.Server() {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("holder's server %q not in %v", d.conn.Server(), z.Addrs())
	}
	t.Logf("killing server %d (%s), the holder's, a %s", victim+1, z.Addrs()[victim], z.Mode(ctx, victim))
	z.Server(victim).Kill()

	// The holder's connection moves to another member, same session.
	var refreshErr error
	for i := 0; i < 100; i++ {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		refreshErr = l.Refresh(rctx, 0)
		rcancel()
		if refreshErr == nil || errors.Is(refreshErr, dlock.ErrNotHeld) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if refreshErr != nil {
		t.Fatalf("Refresh after losing a server: %v", refreshErr)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("Err after losing a server = %v, want nil", err)
	}
	if _, err := other.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("other TryLock = %v, want ErrNotAcquired", err)
	}
	// A hand-off on two of three members.
	got := make(chan *dlock.Lock, 1)
	go func() {
		l, err := other.Lock(ctx, "k")
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
		got <- l
	}()
	time.Sleep(200 * time.Millisecond)
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	select {
	case l2 := <-got:
		if l2 == nil {
			t.FailNow()
		}
		if l2.Fence() <= l.Fence() {
			t.Errorf("fence after hand-off %d, want > %d", l2.Fence(), l.Fence())
		}
		_ = l2.Unlock(ctx)
	case <-time.After(20 * time.Second):
		t.Fatal("hand-off not done within 20s")
	}
	// New keys work too.
	for i := 0; i < 10; i++ {
		l, err := c.TryLock(ctx, fmt.Sprint("after-", i))
		if err != nil {
			t.Fatalf("TryLock on two of three members: %v", err)
		}
		_ = l.Unlock(ctx)
	}
}
