// Package sqlitedlock is the embedded dlock driver: locks kept in an SQLite
// database file, shared by every process on one host that opens the same
// file. It needs no server and no cgo (it uses modernc.org/sqlite, registered
// with database/sql as "sqlite").
//
// # URLs
//
// Importing the package registers the "sqlite" scheme with dlock.Open.
// Everything between "sqlite:" (or "sqlite://") and the "?" is the file
// path, percent-decoded:
//
//	sqlite:///var/lib/app/locks.db   absolute path /var/lib/app/locks.db
//	sqlite:/var/lib/app/locks.db     the same
//	sqlite://locks.db                relative path locks.db
//	sqlite:locks.db                  the same
//	sqlite://data/locks.db           relative path data/locks.db
//	sqlite::memory:NAME              an in-memory database shared by the
//	                                 clients of this process that use NAME
//
// There is no host: in "sqlite://data/locks.db" the "data" is the first
// directory of a relative path, resolved against the working directory when
// the URL is opened. "sqlite://localhost/..." is rejected as ambiguous (use
// sqlite:///abs/path or sqlite:localhost/rel/path). A user, password or
// "#fragment" is an error. A path holding "?", "#" or "%" must
// percent-encode them (%3F, %23, %25); Go's URL parser accepts escapes in
// the sqlite:/... and sqlite:///... forms and in sqlite:rel, but not in the
// first segment of sqlite://rel. A missing parent directory is created with
// mode 0700: to share the file among several users, create the directory
// yourself with the permissions you want.
//
// A bare ":memory:" is rejected: each connection would get its own private
// database, so two clients would not exclude each other. A named in-memory
// database (sqlite::memory:NAME, NAME of letters, digits, '_', '.', '-')
// is shared by the clients of this process only, and disappears, fences
// included, when the last of them closes: it is meant for tests.
//
// Query parameters (anything else is an error matching dlock.ErrInvalidOption):
//
//	table=NAME         table holding the locks; default dlock_locks. Letters,
//	                   digits and '_', not starting with a digit or "sqlite_",
//	                   at most 63 bytes.
//	busy_timeout=D     how long SQLite itself waits for another writer of the
//	                   file before the driver's own retry takes over; default
//	                   5s, a bare integer is seconds, 0 disables SQLite's wait.
//	create_table=BOOL  create the table (and its companion table of shared
//	                   grants) when missing; default true. With false both
//	                   must already exist.
//	synchronous=MODE   normal (default) or full: SQLite's durability for each
//	                   grant. normal survives a crash of any process; full also
//	                   survives a power loss or an OS crash.
//
// # Time, fencing and waiting
//
// Every statement reads the time from the SQLite engine inside the statement
// itself (julianday('now'), millisecond precision); the client never sends a
// timestamp. All processes on the host therefore share one clock: the host's
// wall clock. Lease expiry is stored as expires_at in Unix milliseconds.
// TTLs run from MinTTL (10 ms) to MaxTTL (the portable maximum, about 285
// years); a TTL outside them is an error matching ErrInvalidTTL.
//
// An acquire is one INSERT ... ON CONFLICT DO UPDATE ... RETURNING statement:
// it takes the key if it is free, expired or already held by the same token,
// and bumps the key's fence counter in the same statement. The row of a key
// is kept after release, so fences keep increasing for as long as the file
// exists. Refresh and release are single UPDATEs that compare the token. A
// client's auto-refreshed locks are refreshed together (driver.BatchRefresher),
// up to 512 per UPDATE ... FROM ... RETURNING statement.
//
// SQLite has no notifications between processes. A release wakes one
// waiter for the key in the same process (any client on the same file and
// table); waiters in other processes wake on their retry backoff, never
// later than the holder's remaining lease.
//
// # Listing and forced release
//
// The driver implements driver.Lister and driver.ForceReleaser (Client.List,
// Client.ForceUnlock; `dlock list`, `dlock unlock --any-owner`). List reads
// the table's primary key as a range, key >= prefix AND key < the end of the
// prefix (the prefix with its last byte raised by one), so no character of
// the prefix is a pattern and the BINARY collation gives bytewise order; one
// SELECT per 100 held keys, leaving out free rows and leases that ran out on
// the engine's clock. ForceRelease reads the holder, then frees exactly that
// holder with one conditional UPDATE (same token, fence and metadata, lease
// still live), reading again if the key changed hands in between (at most 5
// rounds): two statements, one of them a write. It keeps the row and its
// fence, wakes a waiter in this process as a release does, and the freed
// holder's next refresh finds no row with its token (ErrNotHeld), at no cost
// to the refresh path.
//
// # Semaphores and RW locks
//
// The driver implements driver.SharedLocker (Client.Semaphore,
// Client.RWMutex). Shared grants and waiting writers are rows of a
// companion table, the lock table's name plus "_shares", created with it
// (with create_table=false it must exist: see docs/sqlite.md for its DDL).
// Each grant has its own token, expiry and metadata, the limit it was taken
// with, and a fence from the key's counter in the lock table. A shared
// acquire is one transaction; the exclusive acquire's statement refuses
// while the key has a live shared grant. A key never given a shared grant
// has no row there and its row in the lock table is unchanged.
//
// # Busy database files
//
// The file is put in WAL mode and every connection has a busy timeout, so
// contending processes queue for the file's write lock instead of failing.
// If SQLite still reports the file busy, the driver retries the statement
// itself (with a short jittered backoff) until the caller's context ends or
// 30 s have passed; "database is locked" never reaches the caller. This is
// contention on the file, not on a lock: it is the one place a driver
// retries. When the context ends first the error wraps the context's
// error; after 30 s it matches dlock.ErrUnavailable.
//
// # Limits
//
// One host only: the file must be on a local filesystem. Network
// filesystems (NFS, SMB, most FUSE mounts) are unsupported, as SQLite's
// locking and WAL shared memory do not work across machines. A jump of the
// host's wall clock shortens or lengthens leases by the size of the jump.
package sqlitedlock
