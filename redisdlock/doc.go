// Package redisdlock is the dlock driver for Redis: a single server, a
// Sentinel-managed master, or a Redis Cluster (Redis 5.0 or newer).
//
// A lock is one Redis string, Prefix+key, holding the owner token with a PX
// expiry: the same shape as redsync, bsm/redislock and hand-written
// SET NX PX code. The prefix is empty unless set, so by default the lock on
// K is the Redis key K, and those libraries and dlock exclude each other on
// the same key. Each operation is one script call, one round trip:
// acquire (SET NX PX, fence bump, holder info; or the holder's PTTL),
// refresh and release (compare the token, then PEXPIRE or DEL; release also
// PUBLISHes a wake-up).
//
// # URLs
//
// Importing the package registers these schemes with dlock.Open:
//
//	redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]                 one server (default port 6379, DB 0)
//	rediss://...                                               the same over TLS
//	redis+cluster://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...]  Redis Cluster, seed nodes
//	rediss+cluster://...                                       the same over TLS
//	redis+sentinel://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]
//	                                                           a master found through Sentinel (default port 26379)
//	rediss+sentinel://...                                      the same over TLS
//
// USER and PASSWORD authenticate to the Redis servers (ACL user or
// requirepass); for Sentinel they are not sent to the Sentinels (see
// sentinel_password). The host is required: a URL without one, or without
// the "//" (redis:host:6379), is an error matching dlock.ErrInvalidOption.
// Opening does not contact the server; the first operation does.
//
// Query parameters, all optional:
//
//	prefix=P                    key prefix (default none: the Redis key is exactly the lock name,
//	                            as in redsync/bsm/SET NX code); e.g. "app:" to namespace dlock's
//	                            keys, or to scope them with a Redis ACL
//	fence_ttl=D                 lifetime of a key's fence counter after its last grant (default 720h)
//	dial_timeout=D              connect timeout (default 5s)
//	read_timeout=D              socket read timeout (default 3s)
//	write_timeout=D             socket write timeout (default: read_timeout)
//	pool_size=N                 connections per server (default: go-redis's, 10 per CPU)
//	sentinel_username=U         Sentinel ACL user (redis+sentinel only; default none)
//	sentinel_password=P         Sentinel password (redis+sentinel only; default none); note that a
//	                            password in a query parameter is not redacted when a URL is printed
//	tls_ca_file=FILE            PEM CA bundle to verify the server (rediss* only; default: system roots)
//	tls_cert_file=FILE          client certificate for mutual TLS (rediss* only, with tls_key_file)
//	tls_key_file=FILE           its key
//	tls_server_name=NAME        name to verify in the servers' certificates (default: each host as dialled)
//	tls_insecure_skip_verify=B  do not verify the server's certificate (default false; tests only)
//
// Durations are Go durations ("250ms", "5s", "720h"); a bare integer is
// seconds. Any other parameter is an error matching dlock.ErrInvalidOption,
// as is a TLS parameter on a non-TLS scheme. The client opened from a URL
// applies context deadlines to its sockets and makes one attempt per
// command (dlock retries, with the caller's strategy).
//
// A configured URLOpener, given to dlock.OpenWith, opens these URLs with
// settings from code: default Options that the URL's parameters override,
// a TLS configuration that the tls_* parameters adjust, and a hook that
// adjusts the go-redis options last.
//
// # From a client the application has
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	locks, err := redisdlock.NewClient(rdb, redisdlock.Options{})
//
// NewClient and NewDriver accept any redis.UniversalClient (*redis.Client,
// a Sentinel failover client, *redis.ClusterClient). The driver does not
// close it. Calls return when their context ends even if the client does not
// apply context deadlines to its sockets.
//
// # Keys
//
// For a lock named K the driver uses, all in K's Cluster hash slot (a
// {tag} inside K is honoured, so keys sharing a tag share a slot):
//
//	P+K                          the lock; its value is exactly the owner token
//	P+"\xff{h}fence:"+K          the last fence granted (expires fence_ttl after the last grant)
//	P+"\xff{h}info:"+K           JSON {fence, token, meta} of the holder (expires with the lock)
//	P+"\xff{h}shares:"+K         shared grants' tokens by lease end (semaphores, RW locks)
//	P+"\xff{h}sinfo:"+K          shared grants' fences and metadata, by token
//	P+"\xff{h}slimit:"+K         the limit the shared grants were taken with
//	P+"\xff{h}writers:"+K        waiting writers' tokens by record end
//	P+"\xffreleased:"+K          pub/sub channel announcing releases (not a key)
//
// h is K's own hash tag, or a short tag that hashes to the same slot as
// P+K. Byte 0xff never occurs in UTF-8, so these never collide with a lock
// key, and distinct names never share a lock.
//
// The shared keys exist only while a key has shared grants or waiting
// writers: a key used only as a mutex is stored exactly as above.
//
// # Semaphores and RW locks
//
// The driver implements driver.SharedLocker (Client.Semaphore,
// Client.RWMutex): each permit or reader is a lease of its own in the
// shares sorted set, with a fence from the key's one counter, granted by
// one script while the lock key is free, no waiting writer is recorded and
// fewer than the limit are live. An exclusive lock is refused while shared
// grants live, and a waiting one (Lock) records its token as a waiting
// writer, which keeps new shared grants out until it is granted or gives
// up. See docs/redis.md.
//
// # Fences
//
// A grant's fence is max(last fence of the key + 1, the Redis server's clock
// in microseconds), computed in the acquire script and stored in the fence
// counter. Fences of a key strictly increase while Redis keeps its writes;
// if the counter is lost (restart without persistence, failover that loses
// acknowledged writes, FLUSHALL, expiry after fence_ttl without grants),
// fences still increase as long as the server's clock does not go back. A
// re-acquire with the holder's token keeps the fence; refresh never changes
// it.
//
// # Waiting
//
// The driver implements driver.Notifier with one pub/sub connection shared
// by all waiters of the driver: a key's release channel is subscribed while
// someone waits on it (and for two seconds after, to spare churn). Waiting
// clients also queue on the server: a client's failed attempt, once it
// watches the key (or, for a Lock whose subscription to the key lingers
// from an earlier wait, its first attempt), puts the driver's random id in
// the key's waiting queue
// (a sorted set in the key's slot, entries living 3 s past the client's
// last attempt or renewal), a free key is kept for the first live waiter,
// and each release names that waiter in its message, so one client tries,
// in arrival order. A waiter whose context ends leaves the queue. In a
// Cluster the release is an ordinary PUBLISH, which the cluster forwards to
// every node, so the one connection can sit on any node. A lost message
// (a reconnect, a lock that expired instead of being released) only delays
// a waiter until its backoff or the holder's remaining TTL, which the
// acquire reply reports.
//
// # Listing and forced release
//
// The driver implements driver.Lister and driver.ForceReleaser (Client.List
// and Client.ForceUnlock). List SCANs the database (every master of a
// Cluster) in batches of 500 with MATCH on the info keys of held locks,
// with the prefixes' glob characters escaped, decodes each key back to the
// lock's name, and checks the names of each batch with the inspect script
// in one pipeline: a name is listed when its lock key holds the token its
// info key names. So it lists only dlock's locks of its prefix, never the
// companion keys, an application's keys or another library's locks, and it
// costs about one round trip per 500 keys of the whole database. ForceRelease
// is one script: it reads the holder, deletes the lock and info keys and
// announces the release to the first queued waiter as Release does, keeping
// the fence counter. A key that holds no lock (a string without an expiry,
// another type) is left alone, with an error matching dlock.ErrInvalidKey.
// The freed holder's next refresh finds the lock key changed (ErrNotHeld).
package redisdlock
