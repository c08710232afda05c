package dlock

import (
	"fmt"
	"sync"
)

// FenceGuard is an in-process fence checker for a resource guarded by
// locks: it admits a write only when its fence is at least the highest fence
// it has seen for that key, so a stale holder (one that paused past its
// lease while another owner took the key) cannot overwrite newer data. It is
// safe for concurrent use; the zero value is ready.
//
// Resources in a database or another service should keep the same check
// next to the data, in the same atomic step as the write: see docs/fencing.md
// for a SQL statement and a Redis script.
type FenceGuard struct {
	// OnReject, when set, is called for every write Admit refuses, with
	// the key, the stale fence and the highest fence seen (for metrics:
	// dlockotel counts them). It runs after Admit has decided, outside
	// the guard's lock, and must be fast. Set it before the guard's first
	// use.
	OnReject func(key string, fence, highest uint64)

	mu  sync.Mutex
	max map[string]uint64
}

// Admit records fence for key and returns nil when fence is at least the
// highest seen so far for key; otherwise it returns an error matching
// ErrStaleFence and records nothing. Admit must be called in the same
// critical section as the write it guards.
func (g *FenceGuard) Admit(key string, fence uint64) error {
	g.mu.Lock()
	if g.max == nil {
		g.max = map[string]uint64{}
	}
	hi := g.max[key]
	if fence >= hi {
		g.max[key] = fence
		g.mu.Unlock()
		return nil
	}
	g.mu.Unlock()
	if g.OnReject != nil {
		g.OnReject(key, fence, hi)
	}
	return fmt.Errorf("%w: %q: fence %d is older than %d", ErrStaleFence, key, fence, hi)
}

// Highest returns the highest fence admitted for key, or zero.
func (g *FenceGuard) Highest(key string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.max[key]
}
