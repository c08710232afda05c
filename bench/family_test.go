package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/memdlock"
)

// fakeBackend counts nothing and has no family unless a test gives it one.
func fakeBackend() *backend {
	return &backend{name: "fake", counter: func(context.Context) (counts, error) { return counts{server: 0, roundTrips: -1}, nil }}
}

// grantAll is a lock that never excludes anyone.
func grantAll(context.Context) (func(context.Context) error, error) {
	return func(context.Context) error { return nil }, nil
}

// TestSemaphoreOracle: locks that grant everyone at once must fail the
// contended semaphore scenario.
func TestSemaphoreOracle(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := &subject{id: idSlots, name: "broken", contenders: func(_ context.Context, _ string, n int) ([]lockFunc, func(), error) {
		locks := make([]lockFunc, n)
		for i := range locks {
			locks[i] = grantAll
		}
		return locks, func() {}, nil
	}}
	res := runSemaphore(ctx, fakeBackend(), s, "k", 2, 8, 100*time.Millisecond, 5*time.Millisecond)
	if res.err == nil || !strings.Contains(res.err.Error(), "ORACLE VIOLATED") {
		t.Fatalf("got err %v (peak %d), want the oracle's error", res.err, res.peak)
	}
	if res.peak <= 2 || res.overlaps == 0 {
		t.Errorf("got peak %d, %d grants over the limit; want more than 2 and some", res.peak, res.overlaps)
	}
}

// TestSlotLock: the hand-written semaphore tries every slot, backs off
// when all are held, takes a slot that frees, and stops with its context.
func TestSlotLock(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var (
		mu    sync.Mutex
		held  = []bool{true, true, true}
		tries = map[int]int{}
	)
	try := func(_ context.Context, i int) (func(context.Context) error, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		tries[i]++
		if held[i] {
			return nil, false, nil
		}
		held[i] = true
		return func(context.Context) error { mu.Lock(); held[i] = false; mu.Unlock(); return nil }, true, nil
	}
	lock := slotLock(try, 3)
	go func() {
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		held[1] = false
		mu.Unlock()
	}()
	unlock, err := lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if !held[1] || tries[0] < 2 || tries[2] < 2 {
		t.Errorf("held %v after tries %v: want slot 1 taken after rounds over every slot", held, tries)
	}
	mu.Unlock()
	if err := unlock(ctx); err != nil {
		t.Fatal(err)
	}
	// All held: the call ends with its context.
	mu.Lock()
	held[1] = true
	mu.Unlock()
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer ccancel()
	if _, err := lock(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want context.DeadlineExceeded", err)
	}
}

// TestRWOracle: locks that grant everyone at once must fail the
// readers–writer scenario.
func TestRWOracle(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s := &subject{id: idRWMutex, name: "broken", contenders: func(_ context.Context, _ string, n int) ([]lockFunc, func(), error) {
		locks := make([]lockFunc, n)
		for i := range locks {
			locks[i] = grantAll
		}
		return locks, func() {}, nil
	}}
	res := runRW(ctx, fakeBackend(), s, "k", 6, 2, 100*time.Millisecond, 5*time.Millisecond, 5*time.Millisecond, time.Millisecond)
	if res.err == nil || !strings.Contains(res.err.Error(), "ORACLE VIOLATED") || res.violations == 0 {
		t.Fatalf("got err %v, %d violations; want the oracle's error", res.err, res.violations)
	}
}

// TestFamilyMemory runs the family's scenarios on the in-memory backend:
// correct locks pass the oracles, and the counts add up.
func TestFamilyMemory(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	store := memdlock.NewStore()
	b := fakeBackend()
	b.family = &family{
		open: func() (*dlock.Client, func(), error) {
			c := store.NewClient()
			return c, func() { _ = c.Close() }, nil
		},
		slots: func(_ context.Context, key string, limit, n int) ([]tryFunc, func(), error) {
			c := store.NewClient()
			tries := make([]tryFunc, n)
			for i := range tries {
				tries[i] = func(ctx context.Context, slot int) (func(context.Context) error, bool, error) {
					l, err := c.TryLock(ctx, fmt.Sprintf("%s/%d", key, slot))
					if errors.Is(err, dlock.ErrNotAcquired) {
						return nil, false, nil
					}
					if err != nil {
						return nil, false, err
					}
					return l.Unlock, true, nil
				}
			}
			return tries, func() { _ = c.Close() }, nil
		},
		slotsName: "memdlock TryLock",
	}
	for i, s := range semSubjects(b, 3) {
		res := runSemaphore(ctx, b, s, fmt.Sprintf("sem%d", i), 3, 8, 150*time.Millisecond, time.Millisecond)
		if res.err != nil {
			t.Fatalf("%s: %v", s.label(), res.err)
		}
		if res.peak < 1 || res.peak > 3 || res.grants == 0 || res.fairMax < res.fairMin {
			t.Errorf("%s: peak %d, %d grants, fairness %d/%d", s.label(), res.peak, res.grants, res.fairMax, res.fairMin)
		}
	}
	for i, s := range rwSubjects(b, 4) {
		res := runRW(ctx, b, s, fmt.Sprintf("rw%d", i), 4, 1, 150*time.Millisecond, time.Millisecond, time.Millisecond, 5*time.Millisecond)
		if res.err != nil {
			t.Fatalf("%s: %v", s.label(), res.err)
		}
		if s.id == idOneMutex && res.peakReaders != 1 {
			t.Errorf("%s: %d readers at once, want 1", s.label(), res.peakReaders)
		}
	}
	for _, s := range semUncontendedSubjects(b, 3) {
		runs := runUncontended(ctx, b, []*subject{s}, "u", 40*time.Millisecond, 2)
		if runs[0].err != nil || runs[0].ops == 0 {
			t.Errorf("%s: %d cycles, %v", s.label(), runs[0].ops, runs[0].err)
		}
	}
}
