// Package redlock is the dlock driver for the Redlock algorithm: one lock
// over N independent Redis masters (no replication between them), granted
// by a majority, so that it survives the loss of up to (N-1)/2 of them.
//
// On each node a lock has exactly the layout of package redisdlock (the lock
// key holding the owner token with a PX expiry, a fence counter, an info key
// and a release channel), and each node is driven by the same engine as a
// redisdlock driver, so every step on a node is one of its scripts, one
// round trip.
//
// # Algorithm
//
// Acquire sends the acquire script to all N nodes at once, each with a short
// timeout (node_timeout). The lock is granted when a majority, N/2+1, grants
// it and the validity left, TTL − elapsed − drift (drift = TTL/100 + 2 ms),
// is positive, elapsed being measured from just before the first request
// was sent; the grant's validity deadline is that send time + TTL − drift.
// Otherwise whatever was granted is released on every node (owner-checked)
// and the attempt reports not acquired (some nodes hold the key for another
// owner) or an error wrapping dlock.ErrUnavailable (too many nodes failed
// for a majority to answer). dlock then retries with the caller's jittered
// backoff. Refresh extends the lease on every node and needs a majority;
// when a majority says the key is no longer ours the lock is lost. Release
// frees the key on every node.
//
// # Fences
//
// Fences are quorum-safe: strictly increasing per key across grants under
// the conditions below. On a node, the acquire script grants fence =
// counter + 1 (or the node's clock in microseconds when the node has no
// counter for the key). When the majority that granted reports different
// fences, a second round writes their maximum F to the counters of a
// majority (raising, never lowering) before the grant is reported; when they
// agree, each of them already stored F, which is the same thing. Any later
// majority shares a node with that majority; if the node kept its data its
// counter is at least F, so the later fence is above F. If it lost its data
// (restarted without persistence) it has no counter and grants its clock,
// which is above F when restarts are delayed (see below) and the servers'
// clocks agree to within that delay. See docs/redlock.md for the argument.
//
// # Semaphores and RW locks
//
// The driver implements driver.SharedLocker with the engine's shared
// scripts on every node. A reader (no limit) needs a majority, like a
// writer. A permit of a semaphore of limit n needs q = ⌊n·N/(n+1)⌋ + 1
// nodes, the fewest with (n+1)·q > n·N, so that n+1 holders cannot each
// have a quorum without some node having granted n+1 of them: 4 of 5 nodes
// for a limit of 2, every node for a limit of N−1 or more. A semaphore
// tolerates N − q node failures. Refresh of a permit needs its quorum too.
// See docs/redlock.md.
//
// # Safety conditions
//
// Like Redlock itself, the lock is safe only if: the servers' clocks run at
// about the same rate and are never stepped (Redis expires keys by its own
// wall clock); a node that loses its data (restart without persistence, or
// with an fsync policy that can lose the last second) stays down for at
// least the longest TTL in use ("delayed restart"), or persists with
// appendfsync always; and the holder is not paused past its validity — the
// case that fences exist for.
//
// # URLs
//
// Importing the package registers these schemes with dlock.Open:
//
//	redlock://[USER[:PASSWORD]@]HOST[:PORT],HOST[:PORT],...[/DB]   N independent nodes (default port 6379, DB 0)
//	redlocks://...                                                 the same over TLS
//
// USER and PASSWORD authenticate to every node. Opening does not contact the
// nodes; the first operation does. A node named twice is an error.
//
// Query parameters, all optional:
//
//	node_timeout=D              how long one operation waits for one node (default: TTL/10 between
//	                            50ms and 500ms for acquire and refresh, 500ms for release and inspect)
//	prefix=P                    key prefix on every node (default none: the key is the lock name, as in redsync)
//	fence_ttl=D                 lifetime of a key's fence counter after its last grant (default 720h)
//	dial_timeout=D              connect timeout (default 5s)
//	read_timeout=D              socket read timeout (default 3s)
//	write_timeout=D             socket write timeout (default: read_timeout)
//	pool_size=N                 connections per node (default: go-redis's, 10 per CPU)
//	tls_ca_file=FILE            PEM CA bundle to verify the nodes (redlocks only; default: system roots)
//	tls_cert_file=FILE          client certificate for mutual TLS (redlocks only, with tls_key_file)
//	tls_key_file=FILE           its key
//	tls_server_name=NAME        name to verify in the nodes' certificates (default: each host as dialled)
//	tls_insecure_skip_verify=B  do not verify the nodes' certificates (default false; tests only)
//
// Durations are Go durations ("50ms", "5s"); a bare integer is seconds. Any
// other parameter is an error matching dlock.ErrInvalidOption.
//
// A configured URLOpener, given to dlock.OpenWith, opens these URLs with
// settings from code: default Options that the URL's parameters override,
// a TLS configuration that the tls_* parameters adjust, and a hook that
// adjusts each node's go-redis options last.
//
// # From clients the application has
//
//	nodes := []*redis.Client{redis.NewClient(&redis.Options{Addr: "10.0.0.1:6379"}), ...}
//	locks, err := redlock.NewClient(nodes, redlock.Options{})
//
// The driver does not close the clients.
//
// # Listing and forced release
//
// The driver implements driver.Lister and driver.ForceReleaser (Client.List
// and Client.ForceUnlock). List asks every node at once for its held keys
// and tokens (one SCAN of each node's database, as package redisdlock
// lists) and reports a key when a majority holds it for one token, with
// what Inspect reports; it needs a majority of nodes to answer, and leaves
// out nodes that are slow after a majority answered. ForceRelease reads the
// key on every node as Inspect does and, when a majority holds it for one
// token, frees that holder on every node with one owner-checked script per
// node that announces the release to the node's first queued waiter and
// keeps the fence counter; it reports the holder once a majority of nodes
// no longer hold it, so the holder's next refresh fails with ErrNotHeld.
//
// # Several keys at once, and Proclaim
//
// The driver implements driver.MultiLocker (Client.LockMany): every node
// runs one script over all the keys, and the keys are granted when a
// majority of nodes granted every one of them within the validity, each
// with its own fence; otherwise every node gives back what the attempt
// took. Keys on Redis Cluster nodes must share a hash slot. It implements
// driver.MetadataSetter (Election.Proclaim): one script per node, done
// when a majority changed the leader's metadata.
//
// # Waiting
//
// The driver implements driver.Notifier: a waiter watches the key on every
// node, over each node's one pub/sub connection shared by all waiters of the
// driver, and wakes on the first release message from any node. A release
// publishes on every node; an attempt that failed gives its partial grant
// back without publishing (nobody waits for it), so contenders that split
// the nodes between them retry on their jittered backoff, as the algorithm
// asks, rather than all at once.
package redlock
