package dlock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
)

// pollOnly hides every optional interface of a driver (no notifications,
// as for another process on MySQL) and counts its Inspect calls.
type pollOnly struct {
	driver.Locker
	reads atomic.Int64
}

func (p *pollOnly) Inspect(ctx context.Context, key string) (driver.Info, error) {
	p.reads.Add(1)
	return p.Locker.Inspect(ctx, key)
}

// TestObserveInterval: without notifications, Observe reads the election
// about once per interval: WithObserveInterval(20ms) reads many times in
// 600 ms, the default (1 s) about once, and a new leader is reported by
// the next reads.
func TestObserveInterval(t *testing.T) {
	store := memdlock.NewStore()
	for _, tc := range []struct {
		name     string
		opts     []dlock.ObserveOption
		min, max int64
	}{
		{"default", nil, 1, 4},
		{"20ms", []dlock.ObserveOption{dlock.WithObserveInterval(20 * time.Millisecond)}, 10, 200},
		{"below the minimum", []dlock.ObserveOption{dlock.WithObserveInterval(time.Nanosecond)}, 10, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &pollOnly{Locker: store.Driver()}
			c := dlock.NewClient(d)
			defer c.Close()
			name := "observe-" + tc.name
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			obs := c.Election(name).Observe(ctx, tc.opts...)
			if l := <-obs; l.Held {
				t.Fatalf("first observed %+v, want no leader", l)
			}
			time.Sleep(600 * time.Millisecond)
			if n := d.reads.Load(); n < tc.min || n > tc.max {
				t.Errorf("%d reads in 600 ms, want %d to %d", n, tc.min, tc.max)
			}
			lead, err := store.NewClient().Election(name).Campaign(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			select {
			case l := <-obs:
				if !l.Held || l.Value != "a" || l.Fence != lead.Fence() {
					t.Errorf("observed %+v, want a with term %d", l, lead.Fence())
				}
			case <-ctx.Done():
				t.Fatal("the new leader was not observed within 10 s")
			}
		})
	}
}
