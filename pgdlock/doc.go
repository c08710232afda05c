// Package pgdlock is the PostgreSQL dlock driver: one row per key in a lease
// table, taken, refreshed and released with single statements whose times
// all come from the server's clock, with a per-key fencing counter and
// LISTEN/NOTIFY hand-off to waiters. It uses github.com/jackc/pgx/v5.
//
// # URLs
//
// Importing the package registers the "postgres" and "postgresql" schemes
// with dlock.Open. The URL is a libpq/pgx connection URL:
//
//	postgres://user:password@host:5432/dbname?sslmode=verify-full
//	postgresql://user@host/dbname?table=locking.leases&create_table=false
//	postgres:///dbname?host=/run/postgresql            (Unix socket directory)
//	postgres://user@%2Frun%2Fpostgresql/dbname         (the same)
//
// Every libpq connection keyword is also a query parameter and wins over the
// same setting in the URL's authority or path: host, port, dbname, user,
// password, passfile, sslmode, sslrootcert, sslcert, sslkey, sslpassword,
// sslsni, sslcertmode, sslnegotiation, channel_binding, require_auth,
// min_protocol_version, max_protocol_version, krbsrvname, krbspn, service,
// servicefile, connect_timeout, application_name, target_session_attrs,
// options. A keyword/value string ("host=/run/postgresql dbname=app") is the
// URL postgres:///app?host=/run/postgresql; Open also takes it as it is.
//
// Missing parts come from pgx's defaults and the PG* environment variables
// (PGPASSWORD, PGUSER, ...) and the password file, as with psql; the host
// must be given (authority, host parameter, service, or PGHOST): a URL
// without one is an error matching dlock.ErrInvalidOption.
//
// The driver's own query parameters:
//
//	table=NAME         the lock table, "name" or "schema.name"; default
//	                   dlock_locks (in the connection's search_path). Each
//	                   part is 1-63 ASCII letters, digits or '_', not starting
//	                   with a digit; names are quoted, so case matters. The
//	                   schema must exist.
//	create_table=BOOL  create the table (and its companion table of shared
//	                   grants, NAME_shares) when missing; default true.
//	                   Safe when many processes start at once (the creation
//	                   is serialised by a transaction-level advisory lock).
//	                   With false both must exist; they are checked at open.
//	notify=BOOL        wake waiters with LISTEN/NOTIFY; default true. Turn it
//	                   off behind a pooler that cannot LISTEN (PgBouncer in
//	                   transaction mode): waiters then poll.
//
// These pgx parameters are passed to pgx unchanged as well (see pgx's
// pgconn.ParseConfig and pgxpool.ParseConfig for their meaning):
//
//	sslmode            disable, allow, prefer (pgx's default), require,
//	                   verify-ca or verify-full
//	sslrootcert, sslcert, sslkey, sslpassword, sslsni
//	                   TLS files and options
//	connect_timeout    seconds to wait for a connection
//	application_name   shown in pg_stat_activity
//	target_session_attrs
//	                   any (default), read-write, primary, ...; use
//	                   read-write with several hosts
//	pool_max_conns, pool_min_conns, pool_min_idle_conns,
//	pool_max_conn_lifetime, pool_max_conn_lifetime_jitter,
//	pool_max_conn_idle_time, pool_health_check_period
//	                   the statement pool's size and recycling; pgx's default
//	                   size is the larger of 4 and the number of CPUs
//	statement_cache_capacity, description_cache_capacity
//	                   pgx's per-connection statement caches
//	default_query_exec_mode
//	                   e.g. simple_protocol behind PgBouncer
//
// Any other parameter is an error matching dlock.ErrInvalidOption (pgx would
// otherwise send it to the server as a run-time setting).
//
// Applications that already have a *pgxpool.Pool or a *sql.DB use NewClient
// or NewClientDB instead, and Options holds the same settings; a URLOpener
// takes Options as the defaults its URLs override, plus what only code can
// give (a tls.Config, a hook on the pgxpool.Config).
//
// # The table
//
//	"key"      bytea PRIMARY KEY   the key's UTF-8 bytes, compared byte for byte
//	token      bytea               the holder's owner token; empty when free
//	fence      bigint              the key's grant counter
//	expires_at timestamptz         end of the lease (server clock); the release
//	                               time after a release
//	metadata   text                the holder's description (WithMetadata)
//
// Keys are stored as bytea, not text, because a key may contain any UTF-8,
// including U+0000, which text cannot hold; to read them in psql use
// convert_from("key", 'UTF8'). A key's row stays after release so that its
// fence keeps increasing: the table has one small row per key ever locked.
// Deleting the row of a key resets its fence to 1 on the next grant; do it
// only for keys whose fences no resource checks any more.
//
// # Statements
//
// Acquire is one INSERT ... ON CONFLICT ("key") DO UPDATE ... WHERE the
// lease is free, expired or held by the same token, which bumps the fence
// in the same statement (the same token within its lease keeps its fence)
// and, when another owner holds the key, returns that owner's remaining
// lease. Refresh and Release are single UPDATEs that compare the token and
// require the lease to be live. Expiry is clock_timestamp() + TTL on the
// server; the client sends only the TTL, in microseconds. Nothing depends
// on the client's clock or time zone. TTLs run from MinTTL (10 ms) to MaxTTL
// (the portable maximum, about 285 years); a TTL outside them is an error
// matching ErrInvalidTTL.
//
// The driver implements driver.BatchRefresher: a client's auto-refreshed
// locks are refreshed together, up to 1000 per UPDATE statement, each with
// the same owner and liveness check as Refresh.
//
// # Listing and forced release
//
// The driver implements driver.Lister and driver.ForceReleaser (Client.List,
// Client.ForceUnlock; `dlock list`, `dlock unlock --any-owner`), also with
// notify=false. List reads the primary key as a range, "key" >= prefix AND
// "key" < the end of the prefix (the prefix with its last byte raised by
// one), so no character of the prefix is a pattern and bytea gives bytewise
// order; one SELECT per 100 held keys, leaving out free rows and leases
// that ran out on the server's clock. ForceRelease is one statement: it
// locks the row of a live lease (SELECT ... FOR UPDATE, which waits for a
// refresh or release in flight and reads the row again), frees it as Release
// does, keeping the row and its fence, returns what it freed, and sends the
// release NOTIFY on commit. The freed holder's next refresh finds no row
// with its token (ErrNotHeld), at no cost to the refresh path.
//
// # Semaphores and RW locks
//
// The driver implements driver.SharedLocker (Client.Semaphore,
// Client.RWMutex). Shared grants, waiting writers and queued shares are
// rows of the companion table NAME_shares; while a key has live shared
// grants its row in the lock table holds a marker token with the longest
// grant's expiry, so the exclusive statements refuse it unchanged. Grants
// take their fences from the row's counter. A shared acquire or release is
// one transaction that holds the row's lock, sent in one round trip; see
// docs/sql.md.
//
// # Waiting
//
// Release sends NOTIFY on a channel fixed per table (payload: a digest of
// the key) in the same statement, delivered on commit. Each driver keeps one
// LISTEN connection while any of its callers waits, shared by all of them,
// and wakes the waiters of the released key. The connection is pinged when
// quiet and replaced when it drops; after a reconnection every waiter is
// woken once, since releases may have been missed. A lost notification
// costs at most the waiter's retry backoff, which never exceeds the
// holder's remaining lease.
//
// A shared wait (Semaphore.Acquire, RLock) is the driver's own
// (driver.SharedQueuer): the waiter joins the key's queue of shares, and a
// shared release grants the permit it frees to the first of them itself and
// notifies it by name, so permits and readers are served in arrival order,
// the hand-off costs no round trip after the release, and the other waiters
// send nothing.
package pgdlock
