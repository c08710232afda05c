package driver

import "context"

// MultiLocker is implemented by drivers that can take several keys in one
// atomic step: a Redis script over keys of one Cluster slot, an SQL
// transaction, an etcd Txn. The portable layer's LockMany uses it in place
// of one attempt per key; a driver without it, or one that refuses the
// keys, gets the attempts one by one in canonical order.
//
// AcquireMany makes exactly one exclusive attempt at every request of reqs,
// all or nothing, in one step that no other grant of these keys can
// interleave with:
//
//   - When every key is free it grants all of them, each to its request's
//     token, and returns one Result per request, in order, each Acquired
//     with its key's fence (from the key's one counter, as Acquire's is)
//     and, where the driver sets them, its ValidUntil.
//   - When any key is held (exclusively or by a shared grant of a
//     SharedLocker) or queued for (a Queuer's waiting entries), it grants
//     none: the call leaves no trace on any key, and returns one Result per
//     request, none Acquired, with HolderTTL set on those that stood in the
//     way (as Acquire reports it) and zero on the others.
//   - A request for a key the token already holds renews it as Acquire
//     does: keeping its fence where Capabilities.ReacquireWithToken is
//     set, else with a fence no lower.
//
// The requests have distinct keys, the same TTL and no Hints: AcquireMany
// is a single try and records no waiting writer. Each key granted is then
// an exclusive lease of its own: refreshed, released and inspected one key
// at a time, exactly as Acquire's grants are.
//
// When the driver cannot take these keys in one step (keys in different
// Redis Cluster slots, more keys than one transaction may hold), it returns
// an error wrapping errors.ErrUnsupported without changing anything, and
// the portable layer takes the keys one by one. Any other error leaves the
// outcome unknown, as Acquire's does: the portable layer releases every
// request's token in the background.
type MultiLocker interface {
	Locker
	AcquireMany(ctx context.Context, reqs []Request) ([]Result, error)
}
