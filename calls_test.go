package dlock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/memdlock"
)

// recordingObserver records one call's events and end.
type recordingObserver struct {
	mu     *sync.Mutex
	call   dlock.Call
	ctxVal any
	events []dlock.EventKind
	end    *dlock.CallResult
}

func (o *recordingObserver) Event(e dlock.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, e.Kind)
}

func (o *recordingObserver) End(r dlock.CallResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.end = &r
}

type ctxKey string

// TestCallHook: every acquisition, Unlock and Refresh goes through the
// CallHooks in order (the second sees the context the first returned), and
// each call's observer gets its events, then its end once.
func TestCallHook(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	var calls []*recordingObserver
	first := func(ctx context.Context, call dlock.Call) (context.Context, dlock.CallObserver) {
		return context.WithValue(ctx, ctxKey("hook"), call.Op), nil
	}
	second := func(ctx context.Context, call dlock.Call) (context.Context, dlock.CallObserver) {
		o := &recordingObserver{mu: &mu, call: call, ctxVal: ctx.Value(ctxKey("hook"))}
		mu.Lock()
		calls = append(calls, o)
		mu.Unlock()
		return ctx, o
	}
	store := memdlock.NewStore()
	c := store.NewClient(dlock.WithCallHook(first), dlock.WithCallHook(second))
	defer c.Close()
	other := store.NewClient()
	defer other.Close()
	held, err := other.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock of a held key = %v", err)
	}
	time.AfterFunc(30*time.Millisecond, func() { _ = held.Unlock(context.Background()) })
	l, err := c.Lock(ctx, "k", dlock.WithRetry(dlock.LinearBackoff(5*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"try_lock", "lock", "refresh", "unlock"}
	if len(calls) != len(want) {
		t.Fatalf("%d calls seen, want %d", len(calls), len(want))
	}
	for i, o := range calls {
		if o.call.Op != want[i] || o.call.Key != "k" || o.call.Backend != "memory" || o.ctxVal != want[i] {
			t.Errorf("call %d = %+v (context value %v), want op %s on k, memory, with the first hook's context", i, o.call, o.ctxVal, want[i])
		}
		if o.end == nil {
			t.Errorf("call %d (%s) never ended", i, o.call.Op)
		}
	}
	if e := calls[0].end; e == nil || !errors.Is(e.Err, dlock.ErrNotAcquired) || e.Attempts != 1 {
		t.Errorf("the refused TryLock's end = %+v, want ErrNotAcquired after 1 attempt", e)
	}
	if e := calls[1].end; e == nil || e.Err != nil || e.Fence != l.Fence() || e.Attempts < 2 {
		t.Errorf("the waiting Lock's end = %+v, want its fence %d after 2 or more attempts", e, l.Fence())
	}
	got := map[dlock.EventKind]int{}
	for _, k := range calls[1].events {
		got[k]++
	}
	if got[dlock.EventWaiting] != 1 || got[dlock.EventWaited] != 1 || got[dlock.EventAcquired] != 1 || got[dlock.EventRetrying] == 0 {
		t.Errorf("the waiting Lock's events = %v; want one waiting, retrying ones, one waited, one acquired", calls[1].events)
	}
}
