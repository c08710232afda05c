package dlock

import "context"

// RWMutex is a readers–writer lock on one key: "many readers of the config,
// one writer at a time". Readers share the key with no limit; a writer
// holds it alone. Writers are preferred: a writer that waits stops new
// readers from getting in, so readers that keep overlapping never starve
// it, and the readers already in finish as usual. A writer that gives up
// waiting (its ctx ends, its retry strategy stops) lets new readers in
// again at once; one that crashes while it waits holds them back for at
// most its TTL.
//
// Every grant is a *Lock with its own fence from the key's one counter, TTL,
// auto-refresh, Done and Err; Unlock ends it. The writer's side is the
// key's mutex: RWMutex.Lock and Client.Lock on the same key exclude each
// other. The readers' side needs a backend whose driver grants shared
// leases (driver.SharedLocker); elsewhere RLock and TryRLock fail with an
// error matching ErrUnsupported.
//
// An RWMutex is safe for concurrent use; it is a handle that holds nothing
// itself.
type RWMutex struct {
	c   *Client
	key string
}

// RWMutex returns the readers–writer lock of key.
func (c *Client) RWMutex(key string) *RWMutex { return &RWMutex{c: c, key: key} }

// Key returns the lock's key.
func (rw *RWMutex) Key() string { return rw.key }

// RLock takes a reader's share, waiting while a writer holds the key or
// waits for it, as Client.Lock waits. opts are those of Client.Lock.
func (rw *RWMutex) RLock(ctx context.Context, opts ...LockOption) (*Lock, error) {
	return rw.c.acquireAs(ctx, rw.key, opts, false, &share{})
}

// TryRLock makes one attempt at a reader's share: ErrNotAcquired while a
// writer holds the key or waits for it.
func (rw *RWMutex) TryRLock(ctx context.Context, opts ...LockOption) (*Lock, error) {
	return rw.c.acquireAs(ctx, rw.key, opts, true, &share{})
}

// Lock takes the key for a writer, waiting for the writer before it and for
// the readers in; while it waits no new reader gets in.
func (rw *RWMutex) Lock(ctx context.Context, opts ...LockOption) (*Lock, error) {
	return rw.c.acquire(ctx, rw.key, opts, false)
}

// TryLock makes one attempt at the writer's side: ErrNotAcquired while
// anyone holds the key. A TryLock does not hold readers back.
func (rw *RWMutex) TryLock(ctx context.Context, opts ...LockOption) (*Lock, error) {
	return rw.c.acquire(ctx, rw.key, opts, true)
}
