package pgdlock

// The shared-lease statements. Shared grants and waiting writers are rows
// of the companion table {S} (the lock table's name plus "_shares"); while
// a key has live shared grants its row in the lock table is held by the
// marker token {MARK} (a value no owner token takes: it starts with the
// byte 0xff, never valid UTF-8), with the key's fence counter, the longest
// shared lease as its expiry and the newest grant's metadata. The
// exclusive statements then refuse the key as held, unchanged, and
// Inspect and List report it as the contract says. Every change of a
// key's shared grants holds the lock-table row's lock (the marker's
// expiry follows them), so a statement that reads the grants after
// taking that lock sees all of them. Parameters: $1 key, $2 token, $3 TTL
// in µs, $4 metadata, $5 limit.
const (
	// sqlCreateShares makes the companion table, within sqlCreateTable's
	// block (and its advisory lock).
	sqlCreateShares = `CREATE TABLE IF NOT EXISTS {S} (
	"key"       bytea       NOT NULL,
	writer      boolean     NOT NULL DEFAULT false,
	token       bytea       NOT NULL,
	fence       bigint      NOT NULL DEFAULT 0,
	expires_at  timestamptz NOT NULL,
	metadata    text        NOT NULL DEFAULT '',
	share_limit integer     NOT NULL DEFAULT 0,
	PRIMARY KEY ("key", writer, token)
);`

	// sqlCheckShares fails when the companion table is missing or has the
	// wrong shape.
	sqlCheckShares = `SELECT "key", writer, token, fence, expires_at, metadata, share_limit FROM {S} LIMIT 0`

	// sqlShareLock locks the key's row, making a free one when there is
	// none: (live exclusive holder, marker, remaining µs).
	sqlShareLock = `INSERT INTO {T} AS l ("key") VALUES ($1)
ON CONFLICT ("key") DO UPDATE SET fence = l.fence
RETURNING l.token <> ''::bytea AND l.token <> {MARK} AND l.expires_at > clock_timestamp(), l.token = {MARK},
	CASE WHEN l.expires_at > clock_timestamp() THEN (EXTRACT(EPOCH FROM l.expires_at - clock_timestamp()) * 1000000)::bigint ELSE 0 END`

	// sqlLockRow locks the key's row, if it has one.
	sqlLockRow = `SELECT 1 FROM {T} WHERE "key" = $1 FOR UPDATE`

	// sqlShareRows drops the key's lapsed rows that nobody has locked and
	// reads the live ones: writer, token, fence, remaining µs, limit.
	sqlShareRows = `WITH d AS (
	DELETE FROM {S} WHERE ctid IN (SELECT ctid FROM {S} WHERE "key" = $1 AND expires_at <= clock_timestamp() FOR UPDATE SKIP LOCKED)
)
SELECT writer, token, fence, (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint, share_limit
FROM {S} WHERE "key" = $1 AND expires_at > clock_timestamp()`

	// sqlShareGrant takes the next fence from the key's counter, puts the
	// marker on the key's row (extending its expiry to the new grant's,
	// with the grant's metadata) and records the grant. Returns the fence.
	sqlShareGrant = `WITH f AS (
	UPDATE {T} AS l SET fence = l.fence + 1, token = {MARK},
		expires_at = CASE WHEN l.token = {MARK} AND l.expires_at > clock_timestamp()
			THEN greatest(l.expires_at, clock_timestamp() + $3::bigint * interval '1 microsecond')
			ELSE clock_timestamp() + $3::bigint * interval '1 microsecond' END,
		metadata = $4
	WHERE l."key" = $1
	RETURNING l.fence
)
INSERT INTO {S} ("key", writer, token, fence, expires_at, metadata, share_limit)
SELECT $1, false, $2, f.fence, clock_timestamp() + $3::bigint * interval '1 microsecond', $4, $5 FROM f
ON CONFLICT ("key", writer, token) DO UPDATE SET fence = EXCLUDED.fence, expires_at = EXCLUDED.expires_at,
	metadata = EXCLUDED.metadata, share_limit = EXCLUDED.share_limit
RETURNING fence`

	// sqlShareRenew renews the token's live grant, keeping its fence, and
	// extends the marker (and its metadata, for the newest grant).
	sqlShareRenew = `WITH s AS (
	UPDATE {S} SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond', metadata = $4, share_limit = $5
	WHERE "key" = $1 AND NOT writer AND token = $2 AND expires_at > clock_timestamp()
	RETURNING fence, expires_at
)
UPDATE {T} AS l SET expires_at = greatest(l.expires_at, s.expires_at),
	metadata = CASE WHEN s.fence = l.fence THEN $4 ELSE l.metadata END
FROM s WHERE l."key" = $1 AND l.token = {MARK}`

	// sqlShareRefresh extends the token's live grant and the marker, in one
	// statement; it changes nothing when the grant lapsed or was freed.
	// Returns a row when refreshed.
	sqlShareRefresh = `WITH s AS (
	UPDATE {S} SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond'
	WHERE "key" = $1 AND NOT writer AND token = $2 AND expires_at > clock_timestamp()
	RETURNING expires_at
)
UPDATE {T} AS l SET expires_at = greatest(l.expires_at, s.expires_at)
FROM s WHERE l."key" = $1 AND l.token = {MARK}
RETURNING 1`

	// sqlShareRefreshBatch is sqlShareRefresh for many grants, with
	// sqlRefreshBatch's lists; returns the positions refreshed.
	sqlShareRefreshBatch = `WITH v AS (
	SELECT decode(substr(x.k, 2), 'hex') AS k, decode(substr(x.t, 2), 'hex') AS t, x.us::bigint AS us, x.i
	FROM unnest(string_to_array($1::text, ','), string_to_array($2::text, ','), string_to_array($3::text, ','))
		WITH ORDINALITY AS x(k, t, us, i)
), s AS (
	UPDATE {S} AS g SET expires_at = clock_timestamp() + v.us * interval '1 microsecond'
	FROM v
	WHERE g."key" = ANY (ARRAY(SELECT k FROM v))
		AND g."key" = v.k AND NOT g.writer AND g.token = v.t AND g.expires_at > clock_timestamp()
	RETURNING g."key", g.expires_at, v.i
), m AS (
	UPDATE {T} AS l SET expires_at = greatest(l.expires_at, x.e)
	FROM (SELECT "key", max(expires_at) AS e FROM s GROUP BY "key") AS x
	WHERE l."key" = x."key" AND l.token = {MARK}
	RETURNING l."key"
)
SELECT s.i FROM s WHERE s."key" IN (SELECT "key" FROM m)`

	// sqlShareDelete deletes the token's grant and writer record of the
	// key: (writer, still live) of each row deleted.
	sqlShareDelete = `DELETE FROM {S} WHERE "key" = $1 AND token = $2
RETURNING writer, expires_at > clock_timestamp()`

	// sqlShareSync makes the key's row follow its live shared grants,
	// after the row's lock is held: the marker with the longest lease and
	// the newest grant's metadata, or free when none is left. It leaves a
	// row of an exclusive holder alone.
	sqlShareSync = `UPDATE {T} AS l SET
	token      = CASE WHEN g.e IS NULL THEN ''::bytea ELSE {MARK} END,
	expires_at = coalesce(g.e, clock_timestamp()),
	metadata   = coalesce(g.m, '')
FROM (SELECT max(expires_at) AS e, (array_agg(metadata ORDER BY fence DESC))[1] AS m
	FROM {S} WHERE "key" = $1 AND NOT writer AND expires_at > clock_timestamp()) AS g
WHERE l."key" = $1 AND l.token = {MARK}`

	// sqlShareForce deletes every grant and writer record of the key.
	sqlShareForce = `DELETE FROM {S} WHERE "key" = $1`

	// sqlNotify notifies channel $1 with payload $2 (on commit).
	sqlNotify = `SELECT pg_notify($1, $2)`

	// sqlHolders reads the key's live grants (kind 0 exclusive, 1 shared)
	// and writer records (kind 2): kind, fence, remaining µs, metadata,
	// limit.
	sqlHolders = `SELECT 0, fence, (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint, metadata, 0
FROM {T} WHERE "key" = $1 AND token <> ''::bytea AND token <> {MARK} AND expires_at > clock_timestamp()
UNION ALL
SELECT CASE WHEN writer THEN 2 ELSE 1 END, fence, (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint, metadata, share_limit
FROM {S} WHERE "key" = $1 AND expires_at > clock_timestamp()`

	// sqlAcquireWaiting is sqlAcquire for an attempt that waits: granted,
	// it deletes the token's writer record; refused while the key's row
	// holds the marker, it records the token as a waiting writer for $3.
	// The refusal reports the shortest shared lease.
	sqlAcquireWaiting = `WITH a AS (
	INSERT INTO {T} AS l ("key", token, fence, expires_at, metadata)
	VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 microsecond', $4)
	ON CONFLICT ("key") DO UPDATE SET
		fence      = CASE WHEN l.token = EXCLUDED.token AND l.expires_at > clock_timestamp()
		                  THEN l.fence ELSE l.fence + 1 END,
		token      = EXCLUDED.token,
		expires_at = EXCLUDED.expires_at,
		metadata   = EXCLUDED.metadata
	WHERE l.token = ''::bytea OR l.expires_at <= clock_timestamp() OR l.token = EXCLUDED.token
	RETURNING l.fence
), d AS (
	DELETE FROM {S} WHERE "key" = $1 AND writer AND token = $2 AND EXISTS (SELECT FROM a)
), m AS (
	SELECT fence, expires_at, token, token = {MARK} AS shared FROM {T} WHERE "key" = $1 AND NOT EXISTS (SELECT FROM a)
), w AS (
	INSERT INTO {S} ("key", writer, token, fence, expires_at)
	SELECT $1, true, $2, 0, clock_timestamp() + $3::bigint * interval '1 microsecond'
	FROM m WHERE m.shared AND m.expires_at > clock_timestamp()
	ON CONFLICT ("key", writer, token) DO UPDATE SET expires_at = EXCLUDED.expires_at
	RETURNING 1
)
SELECT true, fence, 0::bigint, false FROM a
UNION ALL
SELECT false, m.fence, {HOLDER_US}, EXISTS (SELECT FROM w) FROM m`

	// holderUS is a refused acquire's holder lease in µs: the key's row's,
	// or the shortest shared grant's while the row holds the marker.
	holderUS = `CASE WHEN token = {MARK} THEN coalesce(
	(SELECT (EXTRACT(EPOCH FROM min(s.expires_at) - clock_timestamp()) * 1000000)::bigint
		FROM {S} AS s WHERE s."key" = $1 AND NOT s.writer AND s.expires_at > clock_timestamp()),
	(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint)
ELSE (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint END`

	// markerHex is the marker token's bytes in hex: 0xff then "dlock:shared".
	markerHex = `ff646c6f636b3a736861726564`
)
