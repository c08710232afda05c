package sqlitedlock

// The shared-lease statements, on the companion table {S} ("<table>_shares")
// beside the lock table {T}. A key never given a shared grant has no row
// there, and its row in {T} is exactly what it was. Parameters as for the
// lock table: ?1 key, ?2 token, ?3 TTL in ms, ?4 metadata, ?5 limit.
const (
	// sqlCreateShares makes the companion table: one row per shared grant
	// (writer 0), with its own token, fence (from the key's counter in
	// {T}), expiry in Unix ms on the engine's clock, metadata and the limit
	// it was taken with; and one row per waiting writer (writer 1, fence 0)
	// that holds new shared grants back until it lapses.
	sqlCreateShares = `CREATE TABLE IF NOT EXISTS {S} (
	key         TEXT    NOT NULL COLLATE BINARY,
	writer      INTEGER NOT NULL DEFAULT 0,
	token       TEXT    NOT NULL,
	fence       INTEGER NOT NULL DEFAULT 0,
	expires_at  INTEGER NOT NULL DEFAULT 0,
	metadata    TEXT    NOT NULL DEFAULT '',
	share_limit INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (key, writer, token)
) WITHOUT ROWID`

	// sqlCheckShares fails when the companion table is missing or has the
	// wrong shape.
	sqlCheckShares = `SELECT key, writer, token, fence, expires_at, metadata, share_limit FROM {S} LIMIT 0`

	// sqlSharesLive is true when the key has a live shared grant: the
	// condition the exclusive acquire adds.
	sqlSharesLive = `EXISTS (SELECT 1 FROM {S} WHERE {S}.key = ?1 AND {S}.writer = 0 AND {S}.expires_at > {NOW})`

	// sqlDropLapsed deletes the key's lapsed grants and writer records.
	sqlDropLapsed = `DELETE FROM {S} WHERE key = ?1 AND expires_at <= {NOW}`

	// sqlMainState reads whether the key has a live exclusive holder and
	// its remaining lease in ms.
	sqlMainState = `SELECT token <> '' AND expires_at > {NOW}, expires_at - {NOW} FROM {T} WHERE key = ?1`

	// sqlShareRows reads the key's shared grants and writer records, with
	// the remaining lease in ms.
	sqlShareRows = `SELECT writer, token, fence, expires_at - {NOW}, share_limit FROM {S} WHERE key = ?1`

	// sqlShareRenew renews the token's live grant, keeping its fence.
	sqlShareRenew = `UPDATE {S} SET expires_at = {NOW} + ?3, metadata = ?4, share_limit = ?5
WHERE key = ?1 AND writer = 0 AND token = ?2`

	// sqlBumpFence takes the next fence from the key's counter in {T},
	// making the key's row (free) when there is none. It changes nothing
	// else of the row.
	sqlBumpFence = `INSERT INTO {T} (key, fence) VALUES (?1, 1)
ON CONFLICT (key) DO UPDATE SET fence = fence + 1
RETURNING fence`

	// sqlShareInsert records a new shared grant; ?6 is its fence.
	sqlShareInsert = `INSERT OR REPLACE INTO {S} (key, writer, token, fence, expires_at, metadata, share_limit)
VALUES (?1, 0, ?2, ?6, {NOW} + ?3, ?4, ?5)`

	// sqlWriterRecord records (or renews) the token as a waiting writer.
	sqlWriterRecord = `INSERT OR REPLACE INTO {S} (key, writer, token, fence, expires_at, metadata, share_limit)
VALUES (?1, 1, ?2, 0, {NOW} + ?3, '', 0)`

	// sqlWriterDrop deletes the token's writer record.
	sqlWriterDrop = `DELETE FROM {S} WHERE key = ?1 AND writer = 1 AND token = ?2`

	// sqlShareRefresh extends the token's live shared grant.
	sqlShareRefresh = `UPDATE {S} SET expires_at = {NOW} + ?3
WHERE key = ?1 AND writer = 0 AND token = ?2 AND expires_at > {NOW}`

	// sqlShareRefreshBatch is sqlShareRefresh for many grants, as
	// sqlRefreshBatch is for the lock table.
	sqlShareRefreshBatch = `WITH v(k, t, ms) AS (VALUES {ROWS})
UPDATE {S} SET expires_at = {NOW} + v.ms
FROM v
WHERE {S}.key = v.k AND {S}.writer = 0 AND {S}.token = v.t AND {S}.expires_at > {NOW}
RETURNING key, token`

	// sqlShareRelease deletes the token's grant and writer record of the
	// key, returning what it deleted (a grant counts when still live).
	sqlShareRelease = `DELETE FROM {S} WHERE key = ?1 AND token = ?2 RETURNING writer, expires_at - {NOW}`

	// sqlWritersWaiting reports whether the key has a live writer record.
	sqlWritersWaiting = `SELECT EXISTS (SELECT 1 FROM {S} WHERE key = ?1 AND writer = 1 AND expires_at > {NOW})`

	// sqlShareInfo aggregates the key's live shared grants: how many, the
	// newest fence, the longest and shortest remaining leases in ms, the
	// newest grant's metadata.
	sqlShareInfo = `SELECT count(*), coalesce(max(fence), 0), coalesce(max(expires_at), 0) - {NOW}, coalesce(min(expires_at), 0) - {NOW},
	coalesce((SELECT metadata FROM {S} WHERE key = ?1 AND writer = 0 AND expires_at > {NOW} ORDER BY fence DESC LIMIT 1), '')
FROM {S} WHERE key = ?1 AND writer = 0 AND expires_at > {NOW}`

	// sqlHolders reads the key's live grants, exclusive (kind 0) and
	// shared (kind 1), and its live writer records (kind 2), in fence
	// order: kind, fence, remaining lease in ms, metadata, limit.
	sqlHolders = `SELECT 0, fence, expires_at - {NOW}, metadata, 0 FROM {T}
WHERE key = ?1 AND token <> '' AND expires_at > {NOW}
UNION ALL
SELECT 1 + writer, fence, expires_at - {NOW}, metadata, share_limit FROM {S}
WHERE key = ?1 AND expires_at > {NOW}
ORDER BY 2`

	// sqlList reads up to ?3 held keys k with ?1 <= k < ?2 (BINARY
	// collation: bytewise), in key order: key, fence, remaining lease in
	// ms, metadata. Exclusive holders come from the lock table's primary
	// key; keys with live shared grants from the companion table's, with
	// their newest fence and metadata and the longest lease.
	sqlList = `SELECT key, fence, expires_at - {NOW}, metadata FROM {T}
WHERE key >= ?1 AND key < ?2 AND token <> '' AND expires_at > {NOW}
UNION ALL
SELECT s.key, max(s.fence), max(s.expires_at) - {NOW},
	(SELECT m.metadata FROM {S} AS m WHERE m.key = s.key AND m.writer = 0 AND m.expires_at > {NOW} ORDER BY m.fence DESC LIMIT 1)
FROM {S} AS s
WHERE s.key >= ?1 AND s.key < ?2 AND s.writer = 0 AND s.expires_at > {NOW}
GROUP BY s.key
ORDER BY 1 LIMIT ?3`

	// sqlShareForce deletes every grant and writer record of the key,
	// returning what it deleted.
	sqlShareForce = `DELETE FROM {S} WHERE key = ?1 RETURNING writer, fence, expires_at - {NOW}, metadata`
)
