// Package etcddlock is the dlock driver for etcd v3: lease-backed locks with a
// native FIFO queue and fencing tokens, laid out exactly like etcd's own lock
// (go.etcd.io/etcd/client/v3/concurrency.Mutex and `etcdctl lock`), so that
// the two interoperate.
//
// # URLs
//
// Importing the package registers two schemes with dlock.Open:
//
//	etcd://host:port[,host:port...][?params]    plain gRPC
//	etcds://host:port[,host:port...][?params]   TLS
//	etcd://user:password@host:port              etcd authentication (either scheme)
//
// An endpoint without a port uses 2379. List every member of the cluster
// (IPv6 addresses work only as the single endpoint, e.g. etcd://[::1]:2379).
// The URL takes no path. Query parameters (anything else is an error
// matching dlock.ErrInvalidOption):
//
//	prefix=P                  etcd key prefix of the lock queues; default
//	                          "/dlock/". Keys are escaped under it (see Key
//	                          layout). An empty value (?prefix=) uses keys
//	                          verbatim with no prefix: the layout of
//	                          concurrency.NewMutex(session, K) and
//	                          `etcdctl lock K`.
//	dial-timeout=D            bound on the connection set-up work done in
//	                          Open (fetching an auth token when a user is
//	                          given); default 5s. A bare integer is seconds.
//	request-timeout=D         bound on each single request to etcd (not on
//	                          waiting in a queue); default 10s.
//	cacert=FILE               etcds only: PEM file of the CAs that sign the
//	                          servers' certificates; default the system pool.
//	cert=FILE, key=FILE       etcds only: client certificate and key (PEM),
//	                          for servers run with --client-cert-auth.
//	server-name=NAME          etcds only: the name to verify in the servers'
//	                          certificates; default the endpoint's host.
//	insecure-skip-tls-verify=BOOL
//	                          etcds only: do not verify the servers'
//	                          certificates; default false. For tests only.
//
// A URLOpener with settings given in code (Options defaults, a
// *tls.Config, a hook on the clientv3.Config) opens the same URLs: register
// it with dlock.Register, or call its OpenLockerURL; OpenURL opens a URL
// with the defaults. Applications that already have a *clientv3.Client use
// NewClient (or NewDriver with dlock.NewClient) with Options instead of a
// URL.
//
// # Key layout
//
// A lock key K has a queue under the etcd prefix Q = P + escape(K), where P is
// the prefix and escape replaces "%" by "%25" and "/" by "%2F". Escaping is
// one-to-one and leaves no "/", so "a/b" and "a%2Fb" are different locks and
// no key reaches outside its own queue. Each waiter or holder has one entry
// Q + "/" + hex(lease ID) attached to a lease (see below); the entry with
// the lowest create revision holds the lock. This is concurrency.Mutex's layout
// with pfx = Q. With an empty prefix (Options.RawKeys) Q = K, verbatim, which
// interoperation with the etcd tools requires; keys containing "/" can then
// nest ("a" sees the entries of "a/b" as waiters ahead of it). The entry's
// value is the lock's metadata; etcd's own tools ignore values.
//
// # Leases, validity and fences
//
// Leases have the lock's TTL rounded up to whole seconds, so a lock whose
// process dies is freed by etcd when its lease runs out, exactly as with
// any other dlock backend. A lock with auto-refresh (the default) is
// attached to a lease shared with the client's other auto-refreshed locks
// of the same lease TTL, as concurrency.Session shares its lease among its
// mutexes: one keep-alive per shared lease and refresh round covers them
// all. A second lock on the same key from the same client needs another
// entry name, so it gets the next shared lease of a short list. A lock
// without auto-refresh (dlock.WithAutoRefresh(false)) has a lease of its
// own, so it ends on the server when its own TTL runs out while the
// client's other locks stay refreshed. Losing a shared lease (it expired or
// was revoked) loses every lock on it. Leases are reused (a shared lease
// stays while it is fresh; an idle lease of its own goes back to a small
// pool on release), so an uncontended lock costs one transaction to take
// and one to release.
//
// The grant's validity is measured from the send time of the last request
// that confirmed the lease (its grant or a keep-alive): etcd ends a lease no
// earlier than that plus its TTL. Refresh sends a keep-alive (or joins one
// of the shared lease sent after the Refresh began) and checks the entry,
// in parallel; when the lease is gone or the entry was deleted it reports
// dlock.ErrNotHeld, and the lock is lost. Keep-alives go over a few
// long-lived streams of the driver, and the driver implements
// driver.BatchRefresher: a client's auto-refreshed locks are refreshed
// together, one keep-alive per lease and their entries checked in
// transactions of up to 128 reads. A Refresh with a longer TTL than the
// lease moves the entry to a new lease of its own; its create revision, and
// so its fence and queue position, stay.
//
// The fence is the entry's create revision: strictly increasing across the
// whole cluster, so across the grants of each key, for as long as the
// cluster keeps its data.
//
// etcd enforces a minimum lease TTL of 1.5 election timeouts rounded up to a
// second (2 s with the default 1 s election timeout); a shorter lease is
// granted at that minimum. The client's validity still uses the requested
// TTL, so it never outlives the server's lease; a crashed holder's key may
// then outlive the requested TTL by that difference. The driver's MinTTL is
// 1 s; its MaxTTL is etcd's largest lease, 9e9 s (about 285 years). Both
// are declared in Capabilities, and dlock refuses a TTL outside them with
// an error matching ErrInvalidTTL before the driver sees it.
//
// # Waiting
//
// Lock waits in the queue (driver.Queuer): one transaction reads the last
// entry and appends ours; the waiter then watches only its predecessor's
// deletion (and its own entry's) and checks, in one read, that its own entry
// still exists and whether an earlier entry remains — once when the watches
// are in place and again after each deletion. A release wakes exactly one
// waiter. Watches start at the current revision, so etcd delivers the
// deletion at once. While waiting, the waiter keeps its lease alive; if the
// lease expires or the entry is deleted meanwhile it joins again at the back
// and never reports a grant on a lost entry. A waiter whose context ends
// deletes its entry before returning. TryLock takes the key only when the
// queue is empty, in one transaction; it never enters the queue.
//
// Release deletes the entry. The entry's name carries the ID of a lease of
// this driver, and a name is used for a new entry only after the previous
// one's deletion was confirmed (never again on that lease when a delete of
// it had an unknown outcome), so a late or repeated release can never delete
// a newer lock. When the delete fails, or etcd takes more than a second to
// answer it (a leader just died), the driver also revokes the lock's lease
// in the background — or, on a shared lease, deletes the entry, comparing
// its create revision — so that the key is free as soon as etcd is back
// rather than when the lease runs out. A shared lease no lock uses any more
// is revoked once it is too old to reuse (or runs out), and by Close.
//
// Re-acquiring a held key with the same token (dlock.WithToken) is not
// supported: Refresh and Release act on locks taken through the same driver.
//
// # Semaphores and RW locks
//
// The driver implements driver.SharedLocker (dlock.Client.Semaphore,
// dlock.RWMutex readers). A shared grant is an entry of the key's queue
// too, on a lease like a mutex entry, named Q + "/\xff" + limit + "." +
// slot for a permit of a semaphore of that limit (slot in [0, limit)), or
// Q + "/\xff0." + lease ID + "." + sequence number for a reader: the byte
// 0xff is in no mutex entry's name and no valid key, so shares sort after
// every mutex entry and the limit is in every share's name. One
// transaction grants a share while the queue has no exclusive entry
// (holding or waiting) and no share of another limit, and the name (the
// permit's slot) is free; so every share precedes every exclusive entry,
// an exclusive waiter waits for the shares as for a holder, and while it
// waits no new share is granted (writer preference). concurrency.Mutex and
// `etcdctl lock` see shares as holders ahead of them and wait. The fence of
// a share is its entry's create revision. A waiting share is woken by the
// release notification (driver.Notifier): one watch per key of the queue
// prefix for deletions, over the client's shared watch stream. See
// docs/etcd.md for the costs.
//
// # LockMany
//
// The driver implements driver.MultiLocker: dlock.Client.LockMany tries
// all its keys in one transaction, which puts each key's mutex entry, as
// TryLock does, only if no key's queue has any entry; more keys than one
// transaction may compare (etcd's --max-txn-ops, 128 by default) are taken
// one by one.
//
// # Listing and freeing locks
//
// The driver implements driver.Lister (dlock.Client.List, `dlock list`) and
// driver.ForceReleaser (dlock.Client.ForceUnlock, `dlock unlock
// --any-owner`); a key held by shares is listed, inspected and freed as a
// whole (its newest share's fence and metadata, the longest TTL). List reads the etcd keys under the prefix followed by the
// escaped key prefix, 128 keys per range read, every page at the first
// one's revision (one snapshot); each queue's entry with the lowest create
// revision is its holder, reported as Inspect reports it, with one
// TimeToLive per distinct lease (one for all the auto-refreshed locks of a
// client on a shared lease). Keys are decoded and sorted in key order;
// etcd keys under the prefix that are not queue entries are skipped. It
// costs a range read per 128 entries (waiters included) and a lease read
// per distinct holder lease. ForceRelease reads the holder's entry and its
// lease TTL and deletes the entry in a transaction comparing its create and
// mod revisions, so it frees exactly the grant it reports: three round
// trips. The next waiter, watching that entry, takes the lock; the freed
// holder's next Refresh finds its entry gone (Refresh checks the entry,
// not only the lease) and reports dlock.ErrNotHeld, while its client's
// other locks on the same shared lease stay held.
package etcddlock
