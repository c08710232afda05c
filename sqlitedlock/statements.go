package sqlitedlock

import "strings"

// nowMS is the SQLite engine's current time in Unix milliseconds. SQLite
// evaluates 'now' once per statement, so every use inside one statement
// sees the same instant. julianday keeps milliseconds exactly (its double
// resolves well below 1 ms), and round() removes the binary fraction.
const nowMS = `CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)`

// The statements, with {T} standing for the quoted table name and {NOW} for
// nowMS. Parameters: ?1 key, ?2 token, ?3 TTL in ms, ?4 metadata.
const (
	// createTable makes the lease table. key compares byte for byte (the
	// BINARY collation). token is '' while the key is free. fence is the
	// per-key grant counter; the row outlives release so that it keeps
	// increasing. expires_at is in Unix ms on the engine's clock.
	sqlCreateTable = `CREATE TABLE IF NOT EXISTS {T} (
	key        TEXT    NOT NULL COLLATE BINARY PRIMARY KEY,
	token      TEXT    NOT NULL DEFAULT '',
	fence      INTEGER NOT NULL DEFAULT 0,
	expires_at INTEGER NOT NULL DEFAULT 0,
	metadata   TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID`

	// sqlAcquire takes the key when there is no row, or the row is free,
	// expired or held by the same token, and the key has no live shared
	// grant ({SHARED}: a key with shared grants always has its row, made
	// for their fences), in one statement. A new holder gets
	// fence+1; the same token within its lease keeps its fence. When the
	// DO UPDATE's WHERE is false (another owner's live lease) no row is
	// written and none is returned.
	sqlAcquire = `INSERT INTO {T} (key, token, fence, expires_at, metadata)
VALUES (?1, ?2, 1, {NOW} + ?3, ?4)
ON CONFLICT (key) DO UPDATE SET
	token      = excluded.token,
	fence      = CASE WHEN token = excluded.token AND expires_at > {NOW} THEN fence ELSE fence + 1 END,
	expires_at = excluded.expires_at,
	metadata   = excluded.metadata
WHERE (token = '' OR expires_at <= {NOW} OR token = excluded.token) AND NOT {SHARED}
RETURNING fence`

	// sqlRefresh extends a live lease of the token.
	sqlRefresh = `UPDATE {T} SET expires_at = {NOW} + ?3
WHERE key = ?1 AND token = ?2 AND token <> '' AND expires_at > {NOW}`

	// sqlRefreshBatch is sqlRefresh for many locks at once: the same owner
	// and liveness check and the same expiry on the engine's clock, per row.
	// {ROWS} stands for the VALUES rows of v, (key, token, TTL in ms), one
	// per lock, built by refreshBatchSQL. SQLite updates each row at most
	// once; the fence is not touched. Returns the key and token of every
	// row refreshed.
	sqlRefreshBatch = `WITH v(k, t, ms) AS (VALUES {ROWS})
UPDATE {T} SET expires_at = {NOW} + v.ms
FROM v
WHERE {T}.key = v.k AND {T}.token = v.t AND {T}.token <> '' AND {T}.expires_at > {NOW}
RETURNING key, token`

	// sqlRelease frees a live lease of the token, keeping the row and its
	// fence.
	sqlRelease = `UPDATE {T} SET token = '', expires_at = 0, metadata = ''
WHERE key = ?1 AND token = ?2 AND token <> '' AND expires_at > {NOW}`

	// sqlInspect reads a key's state; the third column is the remaining
	// lease in ms (zero or less when expired).
	sqlInspect = `SELECT token, fence, expires_at - {NOW}, metadata FROM {T} WHERE key = ?1`

	// sqlForceRelease frees the live lease of the holder that sqlInspect
	// saw, whatever its token, keeping the row and its fence: it changes
	// nothing when the key has changed hands (or was released, or expired)
	// since. Parameters: ?1 key, ?2 token, ?3 fence, ?4 metadata as read.
	sqlForceRelease = `UPDATE {T} SET token = '', expires_at = 0, metadata = ''
WHERE key = ?1 AND token = ?2 AND fence = ?3 AND metadata = ?4 AND token <> '' AND expires_at > {NOW}`

	// sqlCheckTable fails when the table is missing or has the wrong shape.
	sqlCheckTable = `SELECT key, token, fence, expires_at, metadata FROM {T} LIMIT 0`
)

// statement fills in the table names and the clock expression: {T} the
// lock table, {S} its companion table of shared grants (sharesTable).
func statement(tmpl, table string) string {
	s := strings.Replace(tmpl, "{SHARED}", sqlSharesLive, 1)
	return strings.NewReplacer("{T}", `"`+table+`"`, "{S}", `"`+sharesTable(table)+`"`, "{NOW}", nowMS).Replace(s)
}

// sharesTable is the name of the companion table of table that holds its
// shared grants and waiting writers.
func sharesTable(table string) string { return table + "_shares" }
