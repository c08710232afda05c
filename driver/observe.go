package driver

import "context"

// ReleaseObserver is implemented by Notifiers whose WatchReleases hands a
// release to one waiter at a time (SQLite wakes one waiter of a key, since
// only one can take it). ObserveReleases watches the same releases for a
// watcher that never takes the key (dlock.Election.Observe): its channel
// receives a value on every release WatchReleases would report, it never
// takes a wake-up meant for a waiter, and it never passes one on. The
// channel, the stop function and ctx behave as WatchReleases'. Drivers
// whose WatchReleases wakes every watcher need not implement it.
type ReleaseObserver interface {
	Notifier
	ObserveReleases(ctx context.Context, key string) (<-chan struct{}, func(), error)
}
