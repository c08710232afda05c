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

	// sqlLockRow locks the key's row, if it has one.
	sqlLockRow = `SELECT 1 FROM {T} WHERE "key" = $1 FOR UPDATE`

	// sqlShareState is the start of the one-statement shared acquire and
	// release: r is the key's row and g its live shared grants and writer
	// records, both as the statement's snapshot sees them. The statement's
	// change of the key's row then requires that the row it locked is the
	// version r read (xmin, the transaction that wrote it, is unchanged):
	// under READ COMMITTED a statement that waited for the row's lock sees
	// the row's newest version but still reads the companion table with
	// its snapshot from before the wait, which may miss a grant committed
	// meanwhile. Every grant, renewal and release of a share writes a new
	// version of the key's row, so an unchanged xmin proves the snapshot's
	// grants are the key's grants now; a changed one changes nothing and
	// reports verdict 's' (stale), and the driver sends the statement
	// again with a new snapshot. (A writer record only locks the row: one
	// committed during the wait may be missed, and the share is granted
	// as if it had come just before the record.)
	sqlShareState = `WITH r AS (
	SELECT xmin AS x, token, fence, expires_at FROM {T} WHERE "key" = $1
), g AS (
	SELECT count(*) FILTER (WHERE NOT writer AND fence > 0) AS grants,
		count(*) FILTER (WHERE writer) AS writers,
		count(*) FILTER (WHERE NOT writer AND fence < 0 AND token <> $2) AS queued,
		(array_agg(share_limit ORDER BY fence DESC) FILTER (WHERE NOT writer AND fence > 0))[1] AS lim,
		(array_agg(share_limit ORDER BY fence DESC, token) FILTER (WHERE NOT writer AND fence < 0 AND token <> $2))[1] AS qlim,
		coalesce(max(fence) FILTER (WHERE NOT writer AND fence > 0 AND token = $2), 0) AS own,
		max(fence) FILTER (WHERE NOT writer AND fence < 0 AND token = $2) AS qown,
		min(expires_at) FILTER (WHERE NOT writer AND fence > 0) AS grant_end,
		min(expires_at) FILTER (WHERE writer) AS writer_end,
		max(expires_at) FILTER (WHERE NOT writer AND fence > 0 AND token <> $2) AS others_end,
		(array_agg(metadata ORDER BY fence DESC) FILTER (WHERE NOT writer AND fence > 0 AND token <> $2))[1] AS others_meta
	FROM {S} WHERE "key" = $1 AND expires_at > clock_timestamp()
)`

	// sqlAcquireShared is AcquireShared in one statement (after
	// sqlShareState). s judges the snapshot: verdict 'x' a live exclusive
	// holder, 'm' live grants (or, with none, queued shares) of another
	// limit, 'r' the token's live grant (renewed, keeping its fence), 'f'
	// full (the limit reached by the grants and the queued shares, which
	// an attempt that does not wait never jumps, or a waiting writer), 'g'
	// granted. For 'g' and 'r', sqlShareGrant's k writes the key's row:
	// made with the marker when there is none, or locked and, when it is
	// the version s judged, given the next fence (for 'g'), the marker, the
	// longer expiry and the grant's metadata; its a then records the grant,
	// and d drops lapsed rows of the key that nobody has locked.
	// Returns (verdict, fence, holder µs, stored limit), verdict 's' when k
	// found the row changed since the snapshot.
	sqlAcquireShared = sqlShareState + `, s AS (
	SELECT r.x, g.*,
		CASE
			WHEN r.token <> ''::bytea AND r.token <> {MARK} AND r.expires_at > clock_timestamp() THEN 'x'
			WHEN g.grants > 0 AND g.lim <> $5 THEN 'm'
			WHEN g.grants = 0 AND g.qlim <> $5 THEN 'm'
			WHEN g.own > 0 AND r.token = {MARK} THEN 'r'
			WHEN g.writers > 0 OR ($5 > 0 AND g.grants + g.queued >= $5) THEN 'f'
			ELSE 'g'
		END AS verdict,
		CASE WHEN r.token <> {MARK} AND r.expires_at > clock_timestamp() THEN (EXTRACT(EPOCH FROM r.expires_at - clock_timestamp()) * 1000000)::bigint ELSE coalesce((EXTRACT(EPOCH FROM g.grant_end - clock_timestamp()) * 1000000)::bigint, (EXTRACT(EPOCH FROM g.writer_end - clock_timestamp()) * 1000000)::bigint, 0) END AS holder_us
	FROM g LEFT JOIN r ON true
)` + sqlShareGrant + `, d AS (
	DELETE FROM {S} WHERE ctid IN (SELECT ctid FROM {S}
		WHERE "key" = $1 AND token <> $2 AND expires_at <= clock_timestamp() FOR UPDATE SKIP LOCKED)
)
SELECT CASE WHEN s.verdict IN ('g', 'r') AND NOT EXISTS (SELECT FROM a) THEN 's' ELSE s.verdict END,
	coalesce((SELECT fence FROM a), 0), s.holder_us, coalesce(s.lim, s.qlim, 0)
FROM s`

	// sqlShareGrant makes a grant (verdict 'g', or 'r' renewing the
	// token's) judged by the CTE s before it (columns verdict, x, own): k
	// writes the key's row when it is the version s judged, a records the
	// grant (the token's row, which may have been its queued share).
	sqlShareGrant = `, k AS (
	INSERT INTO {T} AS l ("key", token, fence, expires_at, metadata)
	SELECT $1, {MARK}, 1, clock_timestamp() + $3::bigint * interval '1 microsecond', $4 FROM s WHERE s.verdict IN ('g', 'r')
	ON CONFLICT ("key") DO UPDATE SET
		fence      = CASE WHEN (SELECT verdict FROM s) = 'r' THEN l.fence ELSE l.fence + 1 END,
		token      = {MARK},
		expires_at = CASE WHEN l.token = {MARK} AND l.expires_at > clock_timestamp()
			THEN greatest(l.expires_at, EXCLUDED.expires_at) ELSE EXCLUDED.expires_at END,
		metadata   = CASE WHEN (SELECT verdict FROM s) = 'r' AND (SELECT own FROM s) <> l.fence THEN l.metadata ELSE EXCLUDED.metadata END
	WHERE l.xmin = (SELECT x FROM s)
	RETURNING l.fence
), a AS (
	INSERT INTO {S} ("key", writer, token, fence, expires_at, metadata, share_limit)
	SELECT $1, false, $2, CASE WHEN s.verdict = 'r' THEN s.own ELSE k.fence END,
		clock_timestamp() + $3::bigint * interval '1 microsecond', $4, $5
	FROM k, s
	ON CONFLICT ("key", writer, token) DO UPDATE SET fence = EXCLUDED.fence, expires_at = EXCLUDED.expires_at,
		metadata = EXCLUDED.metadata, share_limit = EXCLUDED.share_limit
	RETURNING fence
)`

	// sqlReleaseShare is the release of a shared grant in one statement
	// (after sqlShareState): u makes the key's row follow the grants left
	// (the marker with the longest lease and the newest grant's metadata,
	// or free when none is left) when the token's grant is live and the
	// row is the version r read; d deletes the token's writer record, a
	// lapsed grant, and the live one once u changed the row. While no
	// writer waits, the permit goes straight to the first queued share (see
	// sqlAcquireQueued) of the same limit, n: u gives the row the next
	// fence, the marker, n's expiry when longer and n's metadata, and h
	// turns n's row into its grant with that fence, keeping the expiry n's
	// last statement set (the waiter counts its lease from that
	// statement). {NOTIFY} notifies channel $3: n with payload "w:", its
	// name, ":" and its fence; and, when d deleted anything, the key's
	// waiters (payload $4) while writers wait, else the queued shares after
	// n that the release makes room for, each with "w:" and its name.
	// Returns
	// (token's grant live, row changed, rows deleted, notified): a live
	// grant with the row unchanged means the row changed since the
	// snapshot, and the driver sends the statement again.
	sqlReleaseShare = sqlShareState + `, n AS (
	SELECT w.token, w.expires_at, w.metadata FROM {S} AS w, g
	WHERE w."key" = $1 AND NOT w.writer AND w.fence < 0 AND w.token <> $2 AND w.expires_at > clock_timestamp()
		AND g.own > 0 AND g.writers = 0 AND w.share_limit = coalesce(g.lim, 0)
	ORDER BY w.fence DESC, w.token
	LIMIT 1
), u AS (
	UPDATE {T} AS l SET
		fence      = l.fence + (SELECT count(*) FROM n),
		token      = CASE WHEN g.others_end IS NULL AND NOT EXISTS (SELECT FROM n) THEN ''::bytea ELSE {MARK} END,
		expires_at = CASE WHEN g.others_end IS NULL AND NOT EXISTS (SELECT FROM n) THEN clock_timestamp()
			ELSE greatest(g.others_end, (SELECT expires_at FROM n)) END,
		metadata   = coalesce((SELECT substr(metadata, 33) FROM n), g.others_meta, '')
	FROM g, r
	WHERE l."key" = $1 AND l.token = {MARK} AND l.xmin = r.x AND g.own > 0
	RETURNING l.fence
), h AS (
	UPDATE {S} AS w SET fence = u.fence, metadata = substr(w.metadata, 33)
	FROM u, n WHERE w."key" = $1 AND NOT w.writer AND w.token = n.token
	RETURNING left(n.metadata, 32) AS name, u.fence
), d AS (
	DELETE FROM {S} WHERE "key" = $1 AND token = $2
		AND (writer OR expires_at <= clock_timestamp() OR EXISTS (SELECT FROM u))
	RETURNING 1
)
SELECT g.own > 0, EXISTS (SELECT FROM u), (SELECT count(*) FROM d), {NOTIFY} FROM g`

	releaseShareNotify = `(SELECT count(*) FROM (
	SELECT pg_notify($3, $4) FROM (SELECT FROM d LIMIT 1) AS x WHERE g.writers > 0
	UNION ALL
	SELECT pg_notify($3, 'w:' || h.name || ':' || h.fence) FROM h
	UNION ALL
	SELECT pg_notify($3, 'w:' || left(q.metadata, 32)) FROM (SELECT FROM d LIMIT 1) AS x, ({NEXT}) AS q
	WHERE g.writers = 0 AND q.n > (SELECT count(*) FROM h)
		AND q.n <= CASE WHEN coalesce(g.lim, 0) = 0 THEN 2147483647 ELSE g.lim - g.grants + (g.own > 0)::int END
) AS n)`
	releaseShareNoNotify = `0::bigint`

	// sqlShareRefresh extends the token's live grant and the marker, in one
	// statement; it changes nothing when the grant lapsed or was freed.
	// Returns a row when refreshed.
	sqlShareRefresh = `WITH s AS (
	UPDATE {S} SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond'
	WHERE "key" = $1 AND NOT writer AND fence > 0 AND token = $2 AND expires_at > clock_timestamp()
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
		AND g."key" = v.k AND NOT g.writer AND g.fence > 0 AND g.token = v.t AND g.expires_at > clock_timestamp()
	RETURNING g."key", g.expires_at, v.i
), m AS (
	UPDATE {T} AS l SET expires_at = greatest(l.expires_at, x.e)
	FROM (SELECT "key", max(expires_at) AS e FROM s GROUP BY "key") AS x
	WHERE l."key" = x."key" AND l.token = {MARK}
	RETURNING l."key"
)
SELECT s.i FROM s WHERE s."key" IN (SELECT "key" FROM m)`

	// sqlShareForce deletes every grant and writer record of the key.
	sqlShareForce = `DELETE FROM {S} WHERE "key" = $1 AND (writer OR fence > 0 OR expires_at <= clock_timestamp())`

	// sqlHolders reads the key's live grants (kind 0 exclusive, 1 shared)
	// and writer records (kind 2): kind, fence, remaining µs, metadata,
	// limit.
	sqlHolders = `SELECT 0, fence, (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint, metadata, 0
FROM {T} WHERE "key" = $1 AND token <> ''::bytea AND token <> {MARK} AND expires_at > clock_timestamp()
UNION ALL
SELECT CASE WHEN writer THEN 2 WHEN fence < 0 THEN 3 ELSE 1 END, fence, (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint, metadata, share_limit
FROM {S} WHERE "key" = $1 AND expires_at > clock_timestamp()`

	// sqlAcquireWaiting is sqlAcquire for an attempt that waits: granted,
	// it deletes the token's writer record; refused while the key's row
	// holds the marker, it records the token as a waiting writer for $3,
	// and b writes the key's row anew (same values, new xmin), so that a
	// shared release in flight finds the row changed and is judged again
	// with a snapshot that has the record: the release notifies the key's
	// waiters only while writers wait (sqlReleaseShare). The refusal
	// reports the shortest shared lease.
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
), b AS (
	UPDATE {T} AS l SET fence = l.fence WHERE l."key" = $1 AND EXISTS (SELECT FROM w)
	RETURNING 1
)
SELECT true, fence, 0::bigint, false FROM a
UNION ALL
SELECT false, m.fence, {HOLDER_US}, EXISTS (SELECT FROM w) FROM m`

	// holderUS is a refused acquire's holder lease in µs: the key's row's,
	// or the shortest shared grant's while the row holds the marker.
	holderUS = `CASE WHEN token = {MARK} THEN coalesce(
	(SELECT (EXTRACT(EPOCH FROM min(s.expires_at) - clock_timestamp()) * 1000000)::bigint
		FROM {S} AS s WHERE s."key" = $1 AND NOT s.writer AND s.fence > 0 AND s.expires_at > clock_timestamp()),
	(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint)
ELSE (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint END`

	// markerHex is the marker token's bytes in hex: 0xff then "dlock:shared".
	markerHex = `ff646c6f636b3a736861726564`
)
