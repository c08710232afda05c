// Package dlock gives Go services one API for distributed locks over the
// coordination services they already run: Redis (single node, Cluster,
// Sentinel), Redlock over independent Redis nodes, etcd, ZooKeeper,
// PostgreSQL, MySQL/MariaDB, and SQLite as the embedded single-host default.
//
// A lock is a lease: it is held until Unlock, or until its TTL runs out
// without a refresh. The server enforces the TTL; the client keeps its own
// validity deadline on the monotonic clock and reports the lock lost (Done
// closes, Err matches ErrLost) before the server can grant the key to anyone
// else. An auto-refresh watchdog keeps a lock alive while it is held.
//
// Open a Client with a URL whose scheme picks the driver; import the driver
// package for its registration:
//
//	import (
//		"github.com/dlock-go/dlock"
//		_ "github.com/dlock-go/dlock/redisdlock"
//	)
//
//	client, err := dlock.Open(ctx, "redis://127.0.0.1:6379/0")
//	...
//	err = client.Do(ctx, "invoice/42", func(ctx context.Context) error {
//		// ctx is cancelled the moment the lock is lost.
//		return sendInvoice(ctx, 42)
//	})
//
// Each driver package can also build a Client from a client the
// application already has (a redis.UniversalClient, a *clientv3.Client, a
// *zk.Conn, a *sql.DB or *pgxpool.Pool).
//
// # Fencing
//
// Holding a lock is no proof of exclusivity: a process can pause (GC, swap,
// a stopped VM) after it last checked, its lease can run out, and another
// owner can take the key. Every grant carries a fencing token, Lock.Fence,
// strictly increasing per key on backends that report Capabilities.Fencing.
// A resource that must never accept a stale write checks it: FenceGuard does
// that in process, and docs/fencing.md shows a SQL statement and a Redis
// script for shared resources.
//
// # Errors
//
// Errors match the sentinels with errors.Is: ErrNotAcquired, ErrNotHeld,
// ErrLost, ErrInvalidKey, ErrInvalidTTL, ErrInvalidOption, ErrClosed,
// ErrUnavailable. Context errors stay matchable.
package dlock
