// Package mysqldlock is the MySQL and MariaDB dlock driver: one row per key
// in an InnoDB lease table, taken, refreshed and released with single
// statements whose times all come from the server's clock, with a per-key
// fencing counter. It uses github.com/go-sql-driver/mysql and works with
// MySQL 8 and MariaDB 10.11.
//
// # URLs
//
// Importing the package registers the "mysql" scheme with dlock.Open:
//
//	mysql://user:password@host:3306/database
//	mysql://user:password@db.internal/app?tls=true&table=leases
//	mysql://user:password@/app?socket=/run/mysqld/mysqld.sock
//	mysql://user:password@%2Frun%2Fmysqld%2Fmysqld.sock/app
//	mysql://user:password@unix(/run/mysqld/mysqld.sock)/app
//
// The host (or a Unix socket) and the database are required; a URL without
// them, or without the "//", is an error. The port defaults to 3306.
// Percent-encode '@', ':', '/', '?', '#' and '%' in the user or password.
// Query parameters (anything else is an error matching
// dlock.ErrInvalidOption):
//
//	table=NAME         the lock table, "name" or "database.name"; default
//	                   dlock_locks in the URL's database. Each part is 1-63
//	                   ASCII letters, digits or '_', not starting with a digit.
//	create_table=BOOL  create the table (and its companion table of shared
//	                   grants, NAME_shares) when missing; default true. Safe
//	                   when many processes start at once (serialised by
//	                   GET_LOCK; a concurrent "table exists" counts as done).
//	                   With false both must exist; they are checked at open.
//	tls=MODE           false (default), true (verify the server's certificate
//	                   against the system roots and the host name),
//	                   skip-verify (encrypt without verifying), or preferred
//	                   (TLS when the server offers it, else plain text).
//	timeout=D          how long to wait for a TCP connection; default 10s, a
//	                   bare integer is seconds.
//	socket=PATH        a Unix socket instead of a host (not with tls).
//	readTimeout, writeTimeout, allowCleartextPasswords, allowNativePasswords,
//	allowFallbackToPlaintext, checkConnLiveness, rejectReadOnly, compress,
//	maxAllowedPacket, connectionAttributes
//	                   passed to go-sql-driver/mysql with its meaning and
//	                   defaults.
//
// go-sql-driver's multiStatements, parseTime, loc, clientFoundRows,
// columnsWithAlias, interpolateParams, charset, collation, allowAllFiles,
// allowOldPasswords, serverPubKey, strict and timeTruncate are refused: the
// driver's statements depend on what they change (NewClient takes a *sql.DB
// with any settings).
//
// A driver opened from a URL keeps up to 16 connections and sends each
// statement in one round trip (client-side placeholder interpolation).
// Applications that already have a *sql.DB use NewClient; Options holds the
// same settings. A URLOpener takes Options as the defaults its URLs
// override, plus what only code can give (a tls.Config, a hook on the
// mysql.Config).
//
// # The table
//
//	`key`      VARBINARY(1024) PRIMARY KEY  the key's bytes, compared exactly
//	token      VARBINARY(1024)   the holder's owner token; empty when free
//	fence      BIGINT UNSIGNED   the key's grant counter
//	expires_at DATETIME(6)       end of the lease in UTC (server clock); the
//	                             release time after a release
//	metadata   BLOB              the holder's description (WithMetadata),
//	                             at most 64 KiB
//
// Binary columns make comparisons exact whatever the server's character set
// and collation: "a" and "A", or "é" composed and decomposed, are different
// keys. The whole 1024-byte key is indexed (InnoDB's DYNAMIC row format, the
// default, allows 3072 bytes). A key's row stays after release so that its
// fence keeps increasing.
//
// # Statements
//
// Acquire is one INSERT ... ON DUPLICATE KEY UPDATE whose IF() expressions
// take the row only when it is free, expired or held by the same token, and
// bump the fence in the same statement; the fence of an existing row comes
// back as the statement's insert id through LAST_INSERT_ID(expr). When the
// statement reports no grant (a brand-new row, or another owner's lease) a
// SELECT of the row tells which and returns the holder's remaining lease.
// Refresh and Release are single UPDATEs that compare the token and require
// the lease to be live. Expiry is UTC_TIMESTAMP(6) + TTL on the server; the
// client sends only the TTL, in microseconds, so neither the client's clock
// nor any session or server time_zone matters. TTLs run from MinTTL (10 ms)
// to MaxTTL (the portable maximum, about 285 years); a TTL outside them is
// an error matching ErrInvalidTTL. A table made by hand must keep expires_at
// a DATETIME(6): a TIMESTAMP column ends in 2038.
//
// The driver implements driver.BatchRefresher: a client's auto-refreshed
// locks are refreshed together, up to 500 per multi-table UPDATE, each with
// the same owner and liveness check as Refresh. When the UPDATE changed
// fewer rows than it carried locks, a SELECT of the keys tells which were
// refreshed.
//
// A side effect: after an acquire on a pooled connection, LAST_INSERT_ID()
// on that connection returns the fence until the next insert.
//
// # Listing and forced release
//
// The driver implements driver.Lister and driver.ForceReleaser (Client.List,
// Client.ForceUnlock; `dlock list`, `dlock unlock --any-owner`). List reads
// the primary key as a range, `key` >= prefix AND `key` < the end of the
// prefix (the prefix with its last byte raised by one), both bounds binary
// strings, so no character of the prefix is a pattern and the VARBINARY
// column gives bytewise order (no case folding, no space padding); one
// SELECT per 100 held keys, leaving out free rows and leases that ran out on
// the server's clock. A table made by hand with a text key column whose
// collation does not sort bytewise makes List fail rather than list wrongly.
// ForceRelease reads the holder, then frees exactly that holder with one
// conditional UPDATE (same token, fence and metadata, lease still live) that
// keeps the row and its fence, reading again if the key changed hands in
// between (at most 5 rounds): two statements and no transaction, the same on
// MySQL 8 (no RETURNING) and MariaDB. It wakes this client's waiters for the
// key, as Release does. The freed holder's next refresh finds its token gone
// (ErrNotHeld), at no cost to the refresh path.
//
// # Semaphores and RW locks
//
// The driver implements driver.SharedLocker (Client.Semaphore,
// Client.RWMutex). Shared grants and waiting writers are rows of the
// companion table NAME_shares; while a key has live shared grants its row
// in the lock table holds a marker token with the longest grant's expiry,
// so the exclusive statements refuse it unchanged. Grants take their fences
// from the row's counter. A shared grant is a transaction of two
// statements (an upsert of the key's row that judges the grants and takes
// the fence, and the grant's row); a shared release is two statements
// without one (the grant's DELETE, then an UPDATE of the key's row that
// locks it before recounting); see docs/sql.md. The driver also implements
// driver.MultiLocker (Client.LockMany): one transaction over all the keys.
//
// # Waiting
//
// MySQL has no notifications between connections. A release wakes at once
// the waiters of the same client; waiters elsewhere retry on their backoff,
// which never sleeps past the holder's remaining lease.
package mysqldlock
