// Package redisengine is dlock's lock engine on Redis, shared by the
// drivers redisdlock (one engine over one server, Sentinel-managed master
// or Cluster) and redlock (one engine per independent node, plus the
// quorum).
//
// An Engine holds what one Redis deployment needs: the Lua scripts (under
// lua/, one script call and one round trip per operation), the key layout
// (keys.go: the lock key, its fence counter, info key, waiting queue,
// shared grants and release channel in one Cluster slot), the one pub/sub connection shared
// by every waiter (notify.go) and the client's side of the waiting queues
// (queue.go), the batched refresh (batch.go), List and ForceRelease
// (admin.go), the shared grants of semaphores and RW locks (shared.go,
// beside the lock key, never in it), and the counted attempts of a quorum
// driver (counted.go).
// ReadURL and HostList read what every URL of the Redis family shares
// into go-redis options (url.go).
//
// The engine makes single attempts and reports what it saw; TTLs reach it
// already checked against MinTTL and MaxTTL by the portable layer.
package redisengine
