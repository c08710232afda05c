// Package zkdlock is the ZooKeeper driver for dlock. It runs the classic
// ZooKeeper lock recipe, node for node the one zk.NewLock from
// github.com/go-zookeeper/zk (and Apache Curator's InterProcessMutex) use,
// so dlock clients and those locks exclude each other on the same path and
// wait in one FIFO queue.
//
// # URLs
//
// Importing the package registers the "zk" scheme with dlock.Open:
//
//	zk://host:port[,host:port...]/base/path?param=value
//	zk://user:password@host:port/base/path?acl=creator
//
// The host list is the ensemble (port 2181 when left out). The path is the
// base under which each key gets one node (see Path); without a path the
// base is DefaultBase, "/dlock". It and its parents are created on first use
// with the nodes' ACL. A user and password in the URL are added to the
// session as ZooKeeper digest credentials ("user:password"), re-sent on
// every reconnect; they never appear in errors.
//
// Query parameters, each optional:
//
//	session_timeout  the ZooKeeper session timeout to ask for; default 30s
//	                 (the server may grant less or more: it clamps to its
//	                 minSessionTimeout and maxSessionTimeout). It bounds the
//	                 TTL: see "TTL and the session" below.
//	connect_timeout  how long Open waits for the first session before it
//	                 gives up with an error matching dlock.ErrUnavailable;
//	                 default 10s (Open's ctx may end it sooner).
//	acl              the ACL of the nodes the driver creates:
//	                 "world" (default) — anyone may do anything (ZooKeeper's
//	                 OPEN_ACL_UNSAFE); "creator" — only the digest identity
//	                 in the URL (CREATOR_ALL_ACL); "creator-read" — that
//	                 identity may do anything, anyone may read (so others can
//	                 Inspect). The last two need a user and password.
//
// Durations take Go syntax ("500ms", "10s"); a bare number is seconds.
// Any other parameter is an error matching dlock.ErrInvalidOption.
//
// A URLOpener with settings given in code (Options defaults, a dialer,
// zk.Connect options) opens the same URLs: register it with
// dlock.Register, or call its OpenLockerURL; OpenURL opens a URL with the
// defaults. Applications that already have a *zk.Conn use NewClient (or
// NewDriver with dlock.NewClient) with Options instead of a URL.
//
// # The recipe
//
// A contender creates an ephemeral, sequential node named
// "_c_<guid>-lock-<sequence>" under the key's node (ZooKeeper's protected
// creation: after a connection loss during the create, the driver finds its
// node again by the guid, so no orphan blocks the queue). The lowest sequence
// holds the lock. A waiter watches only the node just before its own, so a
// release wakes exactly one waiter; it also re-reads the queue every 2s in
// case a notification is lost. A waiter whose ctx ends returns at once and
// leaves its node's deletion to the background: it waits for it 25ms at
// most, which a healthy server needs far less than, so the node is then
// usually gone already; a slow or unreachable one does not hold Lock up.
// The deletion is retried until the node is gone (or its session ended).
// This driver's next TryLock or Inspect of the key waits for it (up to a
// second), and Close on an application's connection waits for those still
// under way (up to 2 seconds). Once queued, a waiter rides out connection loss until
// its ctx ends, and joins the queue again (at the tail) if its session
// expired meanwhile. TryLock creates its node and, when it is not the lowest,
// deletes it again.
//
// The lock node is created in one transaction with an empty write to the
// key node, whose reply is the key node's Stat right after the create: its
// mzxid is the lock node's czxid (the fence), and when it counts one child
// the new node is the only one, hence the holder, with no listing of the
// queue. So a lock on a free key costs one request and its release one
// more. A waiter whose listing showed only the holder before it takes the
// lock when the holder's node is deleted, without listing again (nodes that
// join later get higher sequence numbers). On a key that had a queue the
// last time, the listing is sent together with the create.
//
// The key node is the lock's own: the driver keeps its data empty (it
// writes it, empty, in the transaction that creates each lock node) and
// deletes it once it has been empty for a second, or when the Client
// closes.
//
// # TTL and the session
//
// ZooKeeper has no per-node lease: an ephemeral node lives as long as the
// session that made it. The driver maps dlock's TTL onto that as follows:
//
//   - A TTL may be at most the session timeout the server granted
//     (Capabilities().MaxTTL); dlock refuses a longer one with an error
//     matching dlock.ErrInvalidTTL. The client counts its validity from the TTL,
//     and a session is only known to live for one session timeout after the
//     server last heard from it, so a longer TTL could outlive the lock. A
//     TTL of exactly the session timeout is safe: its validity deadline
//     (send time + TTL − drift) ends before the session can expire. The
//     timeout is granted in whole milliseconds, at most 2³¹−1, so no
//     expiry arithmetic can overflow.
//   - The shortest TTL is MinTTL, dlock's own (Capabilities().MinTTL).
//     The driver rounds no TTL: the lease timer below runs for the TTL as
//     given.
//   - While the holder's process runs, the driver deletes the lock node
//     when the TTL passes without a refresh (a lapsed lease frees the key
//     after the TTL, as on every backend).
//   - When the process dies or loses the ensemble, the session expires one
//     session timeout after the server last heard from it, and ZooKeeper
//     deletes the node: the key is free after at most the session timeout.
//   - Refresh checks that the session is the one that created the node and
//     that the node still exists (one read). A client's auto-refreshed
//     locks are refreshed together (driver.BatchRefresher): one multi
//     request of version checks for up to 1000 locks, a small write
//     transaction (see RefreshBatch). After a session expiry every
//     lock of the old session reports dlock.ErrLost; a disconnect that
//     recovers within the session timeout (and before the client's validity
//     deadline) loses nothing. The connection then opens a new session for
//     new locks.
//
// # Fencing
//
// The fence is the lock node's czxid, the ZooKeeper transaction id of its
// creation: strictly increasing across grants of a key, across sessions and
// leader changes, for as long as the ensemble keeps its data. Inspect
// reports the same number for the holder, whichever client it is.
//
// # Listing and freeing locks
//
// The driver implements driver.Lister (dlock.Client.List, `dlock list`) and
// driver.ForceReleaser (dlock.Client.ForceUnlock, `dlock unlock
// --any-owner`). List syncs with the leader, lists the children of the base
// node — one request, names only: ZooKeeper has no paged listing, so a base
// with very many key nodes is bounded by the server's jute.maxbuffer — keeps
// the names that Path makes of a key with the prefix, and reads each such
// key's queue as Inspect does (its children, then the lowest lock node),
// 16 keys at a time, pipelined on the connection. Keys with an empty queue
// and nodes Path cannot produce are left out; the rest come back decoded and
// sorted by key. Cost: two requests per key node with the prefix, held or
// not, plus the sync and the listing of the base. ForceRelease reads the
// holder's node (sync, children, data) and deletes it with the data version
// it read, so it frees exactly the grant it reports; the next waiter,
// watching that node, takes the lock. The freed holder's next Refresh or
// RefreshBatch finds its node gone and reports dlock.ErrNotHeld. Deleting
// another session's node needs the delete permission on the key node.
//
// # Semaphores and RW locks
//
// The driver implements driver.SharedLocker (dlock.Client.Semaphore,
// dlock.RWMutex's readers). A share is an ephemeral sequential node in the
// key's queue beside the exclusive ones, named
// "_c_<guid>-share<limit>-lock-<sequence>" (limit 0 for readers), its data
// an exclusive node's with the limit added. zk.Lock and Curator's mutex read
// the sequence after the last "lock-", so they queue behind shares. A share
// is granted when no exclusive node comes before its own (a waiting writer's
// node holds new shares back: writer preference), no share node of another
// limit does (else ErrLimitMismatch) and fewer than limit share nodes do;
// otherwise it deletes its node. Its fence is its node's czxid. An
// exclusive node is granted when first, so after every share created
// before it. Waiting writers are the exclusive nodes behind the head: the
// driver records no other. A waiting share is woken by the release
// notification (driver.Notifier): a children watch of the key node, set
// again after each event. See docs/zookeeper.md.
//
// # LockMany
//
// The driver implements driver.MultiLocker: dlock.Client.LockMany tries
// all its keys in one multi, which creates each key's lock node as TryLock
// does and reads, in the reply, whether each is alone under its key node.
// When all are, that is the grant; otherwise a second multi deletes them.
//
// # Re-acquiring with a token
//
// An Acquire with a token that holds the key on the same driver keeps the
// node and its fence. Another driver (another process) cannot adopt a lock
// node, since the node lives and dies with its creator's session, so
// Capabilities().ReacquireWithToken is false.
package zkdlock
