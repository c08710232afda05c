package redlock

import "github.com/dlock-go/dlock/internal/redisengine"

// Driver is the concrete type of the drivers NewDriver and OpenURL return,
// for tests.
type Driver = locker

// Nodes returns the per-node engines, in the order of the clients.
func (d *locker) Nodes() []*redisengine.Engine { return d.nodes }

// Quorum returns the number of nodes that make a majority: N/2+1.
func (d *locker) Quorum() int { return d.quorum }

// SharedQuorum returns how many of n nodes a shared grant of limit needs.
func SharedQuorum(n, limit int) int { return sharedQuorum(n, limit) }

// Permits returns how many semaphore permits the driver keeps as asked for
// and not released.
func (d *locker) Permits() int { return d.permits.size() }
