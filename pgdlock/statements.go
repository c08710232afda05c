package pgdlock

import (
	"strconv"
	"strings"
)

// The statements, with {T} standing for the quoted table name. Every time
// comes from the server's clock_timestamp(); the client sends only the TTL,
// in microseconds. Parameters: $1 key (bytea), $2 token (bytea), $3 TTL in
// µs, $4 metadata.
const (
	// sqlCreateTable makes the lease table, serialised by a transaction
	// advisory lock ({LOCK}) so that many processes starting at once do not
	// race on the catalog. key and token compare byte for byte (bytea).
	// token is empty while the key is free. fence is the per-key grant
	// counter; the row outlives release so that it keeps increasing.
	sqlCreateTable = `DO $dlock$ BEGIN
PERFORM pg_advisory_xact_lock({LOCK});
CREATE TABLE IF NOT EXISTS {T} (
	"key"      bytea       NOT NULL PRIMARY KEY,
	token      bytea       NOT NULL DEFAULT ''::bytea,
	fence      bigint      NOT NULL DEFAULT 0,
	expires_at timestamptz NOT NULL DEFAULT '-infinity',
	metadata   text        NOT NULL DEFAULT ''
) WITH (fillfactor = 70);
{SHARES}
END $dlock$`

	// sqlTableExists reports whether the table exists ($1: quoted name).
	sqlTableExists = `SELECT to_regclass($1) IS NOT NULL`

	// sqlCheckTable fails when the table is missing or has the wrong shape.
	sqlCheckTable = `SELECT "key", token, fence, expires_at, metadata FROM {T} LIMIT 0`

	// sqlAcquire takes the key when there is no row, or the row is free,
	// expired or held by the same token, in one statement. A new holder gets
	// fence+1; the same token within its lease keeps its fence. When the
	// DO UPDATE's WHERE is false (another owner's live lease) nothing is
	// written, and the second branch reports the holder's remaining lease
	// in µs (while the row holds the marker of shared grants, the
	// shortest of their leases: holderUS). Returns (acquired, fence,
	// holder µs, whether shared grants hold it); no row at all when the
	// competing row is too new for this statement's snapshot.
	sqlAcquire = `WITH a AS (
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
)
SELECT true, fence, 0::bigint, false FROM a
UNION ALL
SELECT false, fence, {HOLDER_US}, token = {MARK}
FROM {T} WHERE "key" = $1 AND NOT EXISTS (SELECT FROM a)`

	// sqlRefresh extends a live lease of the token.
	sqlRefresh = `UPDATE {T} SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond'
WHERE "key" = $1 AND token = $2 AND expires_at > clock_timestamp()`

	// sqlRefreshBatch is sqlRefresh for many locks at once: the same owner
	// and liveness check and the same expiry on the server's clock, per
	// row. The locks arrive as three comma-separated lists of equal length,
	// so that the statement has three text parameters whatever the batch
	// size: $1 keys and $2 tokens, each element "x" and the bytes in hex;
	// $3 TTLs in µs. The "key" = ANY (...) condition steers the planner to
	// index lookups of the batch's keys: without it a large batch is
	// hash-joined with a scan of the whole table. (v, used twice, is
	// computed once.) Returns the 1-based position in the lists of every
	// lock it refreshed. The fence is not touched.
	sqlRefreshBatch = `WITH v AS (
	SELECT decode(substr(x.k, 2), 'hex') AS k, decode(substr(x.t, 2), 'hex') AS t, x.us::bigint AS us, x.i
	FROM unnest(string_to_array($1::text, ','), string_to_array($2::text, ','), string_to_array($3::text, ','))
		WITH ORDINALITY AS x(k, t, us, i)
)
UPDATE {T} AS l SET expires_at = clock_timestamp() + v.us * interval '1 microsecond'
FROM v
WHERE l."key" = ANY (ARRAY(SELECT k FROM v))
	AND l."key" = v.k AND l.token = v.t AND l.expires_at > clock_timestamp()
RETURNING v.i`

	// sqlRelease frees a live lease of the token, keeping the row and its
	// fence; expires_at records the release time.
	sqlRelease = `UPDATE {T} SET token = ''::bytea, expires_at = clock_timestamp(), metadata = ''
WHERE "key" = $1 AND token = $2 AND expires_at > clock_timestamp()`

	// sqlReleaseNotify is sqlRelease plus a notification on channel $3
	// with payload $4, sent (on commit) only when a row was released.
	// Returns the number of rows released.
	sqlReleaseNotify = `WITH r AS (
	UPDATE {T} SET token = ''::bytea, expires_at = clock_timestamp(), metadata = ''
	WHERE "key" = $1 AND token = $2 AND expires_at > clock_timestamp()
	RETURNING 1
)
SELECT count(*) FROM (SELECT pg_notify($3, $4) FROM r) n`

	// sqlInspect reads a key's state: held, fence, remaining µs, metadata,
	// and the live entries waiting in the companion table (waiting writers
	// and queued shares).
	sqlInspect = `SELECT token <> ''::bytea AND expires_at > clock_timestamp(), fence,
	(EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::bigint, metadata,
	(SELECT count(*) FROM {S} AS s WHERE s."key" = $1 AND (s.writer OR s.fence < 0) AND s.expires_at > clock_timestamp())
FROM {T} WHERE "key" = $1`
)

const (
	// sqlList reads up to $3 held keys k with $1 <= k < $2 (bytea:
	// bytewise), in key order, from the primary key's index: key, fence,
	// remaining µs, metadata. The leases are judged at one instant.
	sqlList = `SELECT l."key", l.fence, (EXTRACT(EPOCH FROM l.expires_at - n.t) * 1000000)::bigint, l.metadata
FROM {T} AS l, (SELECT clock_timestamp() AS t) AS n
WHERE l."key" >= $1 AND l."key" < $2 AND l.token <> ''::bytea AND l.expires_at > n.t
ORDER BY l."key" LIMIT $3`

	// sqlForceRelease frees $1 whoever holds it, in one statement: o locks
	// the row of a live lease (FOR UPDATE, so a concurrent refresh or
	// release is waited for and the row read again), f frees it as a
	// release does, keeping the row and its fence, and returns what o
	// read. {NOTIFY} notifies channel $2 with payload $3 once per row
	// freed (sent on commit), or nothing. Returns (held, fence, remaining
	// µs, metadata): the freed holder's, or held false and the fence of a
	// row that was free.
	sqlForceRelease = `WITH o AS (
	SELECT "key", fence, expires_at, metadata FROM {T}
	WHERE "key" = $1 AND token <> ''::bytea AND expires_at > clock_timestamp()
	FOR UPDATE
), f AS (
	UPDATE {T} AS l SET token = ''::bytea, expires_at = clock_timestamp(), metadata = ''
	FROM o WHERE l."key" = o."key"
	RETURNING o.fence, o.expires_at, o.metadata
), n AS (
	{NOTIFY}
)
SELECT true, f.fence, (EXTRACT(EPOCH FROM f.expires_at - clock_timestamp()) * 1000000)::bigint, f.metadata
FROM f, n
UNION ALL
SELECT false, fence, 0::bigint, ''::text FROM {T} WHERE "key" = $1 AND NOT EXISTS (SELECT FROM f)`

	forceNotify   = `SELECT count(*) AS c FROM (SELECT pg_notify($2, $3) FROM f) AS x`
	forceNoNotify = `SELECT 0 AS c`
)

// statements holds the SQL for one table.
type statements struct {
	create, check, acquire, refresh, refreshBatch, release, releaseNotify, inspect string
	list, forceRelease, forceReleaseNotify                                         string

	// shared leases
	checkShares, lockRow, acquireShared, releaseShare, releaseShareNotify string
	shareRefresh, shareRefreshBatch, shareForce, holders, acquireWaiting  string
	acquireMany, acquireQueued, leaveQueue, leaveQueueNotify              string
}

func newStatements(quoted, sharesQuoted string, lockID int64) statements {
	pre := strings.NewReplacer("{SHARES}", sqlCreateShares, "{HOLDER_US}", holderUS, "{NEXT}", sqlQueueNext)
	r0 := strings.NewReplacer("{T}", quoted, "{S}", sharesQuoted, "{LOCK}", strconv.FormatInt(lockID, 10),
		"{MARK}", "decode('"+markerHex+"', 'hex')")
	r := replacer(func(s string) string { return r0.Replace(pre.Replace(s)) })
	acquireQueued, leaveQueue, leaveQueueNotify := queueStatements(r)
	return statements{
		acquireQueued:     acquireQueued,
		leaveQueue:        leaveQueue,
		leaveQueueNotify:  leaveQueueNotify,
		checkShares:       r.Replace(sqlCheckShares),
		lockRow:           r.Replace(sqlLockRow),
		acquireShared:     r.Replace(sqlAcquireShared),
		acquireMany:       r.Replace(sqlAcquireMany),
		shareRefresh:      r.Replace(sqlShareRefresh),
		shareRefreshBatch: r.Replace(sqlShareRefreshBatch),
		shareForce:        r.Replace(sqlShareForce),
		holders:           r.Replace(sqlHolders),
		acquireWaiting:    r.Replace(sqlAcquireWaiting),

		create:        r.Replace(sqlCreateTable),
		check:         r.Replace(sqlCheckTable),
		acquire:       r.Replace(sqlAcquire),
		refresh:       r.Replace(sqlRefresh),
		refreshBatch:  r.Replace(sqlRefreshBatch),
		release:       r.Replace(sqlRelease),
		releaseNotify: r.Replace(sqlReleaseNotify),
		inspect:       r.Replace(sqlInspect),
		list:          r.Replace(sqlList),

		forceRelease:       strings.Replace(r.Replace(sqlForceRelease), "{NOTIFY}", forceNoNotify, 1),
		forceReleaseNotify: strings.Replace(r.Replace(sqlForceRelease), "{NOTIFY}", forceNotify, 1),
		releaseShare:       r.Replace(strings.Replace(sqlReleaseShare, "{NOTIFY}", releaseShareNoNotify, 1)),
		releaseShareNotify: r.Replace(strings.Replace(sqlReleaseShare, "{NOTIFY}", releaseShareNotify, 1)),
	}
}

// replacer adapts a function to the Replace method the statements use.
type replacer func(string) string

// Replace returns f(s).
func (f replacer) Replace(s string) string { return f(s) }
