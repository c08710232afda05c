package mysqldlock

// The shared-lease statements. Shared grants and waiting writers are rows
// of the companion table {S} (the lock table's name plus "_shares"); while
// a key has live shared grants its row in the lock table is held by the
// marker token {MARK} (0xff then "dlock:shared": never valid UTF-8, so no
// owner token), with the key's fence counter, the longest shared lease as
// its expiry and the newest grant's metadata. The exclusive statements then
// refuse the key as held, unchanged, and Inspect and List report it as the
// contract says. Every change of a key's shared grants runs in a
// transaction that first locks the key's row (always in that order: the
// row, then its shared rows), and reads the shared rows with locking reads,
// which see the newest committed rows.
const (
	// markerSQL is the marker token as a literal.
	markerSQL = `X'ff646c6f636b3a736861726564'`

	// sqlCreateShares makes the companion table.
	sqlCreateShares = "CREATE TABLE IF NOT EXISTS {S} (\n" +
		"\t`key`       VARBINARY(1024) NOT NULL,\n" +
		"\twriter      TINYINT(1)      NOT NULL DEFAULT 0,\n" +
		"\ttoken       VARBINARY(1024) NOT NULL,\n" +
		"\tfence       BIGINT UNSIGNED NOT NULL DEFAULT 0,\n" +
		"\texpires_at  DATETIME(6)     NOT NULL,\n" +
		"\tmetadata    BLOB            NOT NULL,\n" +
		"\tshare_limit INT             NOT NULL DEFAULT 0,\n" +
		"\tPRIMARY KEY (`key`, writer, token)\n" +
		") ENGINE=InnoDB"

	// sqlCheckShares fails when the companion table is missing or has the
	// wrong shape.
	sqlCheckShares = "SELECT `key`, writer, token, fence, expires_at, metadata, share_limit FROM {S} LIMIT 0"

	// sqlMakeRow makes the key's row (free) when there is none and locks
	// it. Parameter: key.
	sqlMakeRow = "INSERT INTO {T} (`key`, metadata) VALUES (?, '') ON DUPLICATE KEY UPDATE fence = fence"

	// sqlLockState is sqlState as a locking read.
	sqlLockState = "SELECT token, fence, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at), metadata FROM {T} WHERE `key` = ? FOR UPDATE"

	// sqlShareRows reads (and locks) the key's shared rows: writer, token,
	// fence, remaining µs, limit. Parameter: key.
	sqlShareRows = "SELECT writer, token, fence, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at), share_limit FROM {S} WHERE `key` = ? FOR UPDATE"

	// sqlDropLapsed deletes the key's lapsed shared rows. Parameter: key.
	sqlDropLapsed = "DELETE FROM {S} WHERE `key` = ? AND expires_at <= {NOW}"

	// sqlShareBump takes the next fence from the key's counter (returned
	// as the insert id) and puts the marker on the row, extending its
	// expiry to the new grant's, with the grant's metadata. Parameters: ttl
	// µs, ttl µs, metadata, key.
	sqlShareBump = "UPDATE {T} SET fence = LAST_INSERT_ID(fence + 1),\n" +
		"\texpires_at = IF(token = {MARK} AND expires_at > {NOW}, GREATEST(expires_at, {NOW} + INTERVAL ? MICROSECOND), {NOW} + INTERVAL ? MICROSECOND),\n" +
		"\ttoken = {MARK}, metadata = ?\n" +
		"WHERE `key` = ?"

	// sqlShareInsert records a grant. Parameters: key, token, fence, ttl
	// µs, metadata, limit.
	sqlShareInsert = "INSERT INTO {S} (`key`, writer, token, fence, expires_at, metadata, share_limit)\n" +
		"VALUES (?, 0, ?, ?, {NOW} + INTERVAL ? MICROSECOND, ?, ?)"

	// sqlShareRenew renews a grant. Parameters: ttl µs, metadata, limit,
	// key, token.
	sqlShareRenew = "UPDATE {S} SET expires_at = {NOW} + INTERVAL ? MICROSECOND, metadata = ?, share_limit = ?\n" +
		"WHERE `key` = ? AND writer = 0 AND token = ?"

	// sqlMarkerExtend extends the marker to a renewed or refreshed grant's
	// expiry, and takes the grant's metadata when it is the newest.
	// Parameters: ttl µs, fence, metadata, key.
	sqlMarkerExtend = "UPDATE {T} SET expires_at = GREATEST(expires_at, {NOW} + INTERVAL ? MICROSECOND),\n" +
		"\tmetadata = IF(fence = ?, ?, metadata)\n" +
		"WHERE `key` = ? AND token = {MARK}"

	// sqlShareLive reads (and locks) the token's live grant: its fence and
	// metadata. Parameters: key, token.
	sqlShareLive = "SELECT fence, metadata FROM {S} WHERE `key` = ? AND writer = 0 AND token = ? AND expires_at > {NOW} FOR UPDATE"

	// sqlShareRefresh extends a grant. Parameters: ttl µs, key, token.
	sqlShareRefresh = "UPDATE {S} SET expires_at = {NOW} + INTERVAL ? MICROSECOND WHERE `key` = ? AND writer = 0 AND token = ?"

	// sqlTokenRows reads (and locks) the token's rows of the key: writer,
	// remaining µs. Parameters: key, token.
	sqlTokenRows = "SELECT writer, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at) FROM {S} WHERE `key` = ? AND token = ? FOR UPDATE"

	// sqlTokenDelete deletes the token's rows of the key. Parameters: key,
	// token.
	sqlTokenDelete = "DELETE FROM {S} WHERE `key` = ? AND token = ?"

	// sqlWriterDelete deletes the token's writer record. Parameters: key,
	// token.
	sqlWriterDelete = "DELETE FROM {S} WHERE `key` = ? AND writer = 1 AND token = ?"

	// sqlWriterRecord records the token as a waiting writer. Parameters:
	// key, token, ttl µs, ttl µs.
	sqlWriterRecord = "INSERT INTO {S} (`key`, writer, token, fence, expires_at, metadata, share_limit)\n" +
		"VALUES (?, 1, ?, 0, {NOW} + INTERVAL ? MICROSECOND, '', 0)\n" +
		"ON DUPLICATE KEY UPDATE expires_at = {NOW} + INTERVAL ? MICROSECOND"

	// sqlShareSync makes the key's row follow its live grants, the row
	// locked: the marker with the longest lease and the newest grant's
	// metadata, or free when none is left. Parameters: key four times.
	sqlShareSync = "UPDATE {T} SET\n" +
		"\ttoken = IF(EXISTS (SELECT 1 FROM {S} WHERE `key` = ? AND writer = 0 AND expires_at > {NOW}), {MARK}, ''),\n" +
		"\texpires_at = COALESCE((SELECT MAX(expires_at) FROM {S} WHERE `key` = ? AND writer = 0 AND expires_at > {NOW}), {NOW}),\n" +
		"\tmetadata = COALESCE((SELECT metadata FROM {S} WHERE `key` = ? AND writer = 0 AND expires_at > {NOW} ORDER BY fence DESC LIMIT 1), '')\n" +
		"WHERE `key` = ? AND token = {MARK}"

	// sqlLockKeys locks the rows of keys; the caller appends the list
	// "(?, ...)" and the order and locking clauses.
	sqlLockKeys = "SELECT `key` FROM {T} WHERE `key` IN "

	// sqlLiveShares reads the live grants among (key, token) pairs; the
	// caller appends the list "((?, ?), ...)" and the locking clause.
	sqlLiveShares = "SELECT `key`, token FROM {S} WHERE writer = 0 AND expires_at > {NOW} AND (`key`, token) IN "

	// sqlShareRefreshBatch extends live grants, as sqlRefreshBatch does
	// exclusive leases.
	sqlShareRefreshBatch = "UPDATE {S} AS s JOIN (\n\t{ROWS}\n) AS v ON s.`key` = v.k AND s.token = v.t\n" +
		"SET s.expires_at = {NOW} + INTERVAL v.us MICROSECOND\n" +
		"WHERE s.writer = 0 AND s.expires_at > {NOW}"

	// sqlMarkerFollow extends the markers of the keys of the (key, token)
	// pairs {PAIRS} to their grants' newest expiry.
	sqlMarkerFollow = "UPDATE {T} AS l JOIN (\n" +
		"\tSELECT `key`, MAX(expires_at) AS e FROM {S} WHERE writer = 0 AND (`key`, token) IN {PAIRS} GROUP BY `key`\n" +
		") AS x ON l.`key` = x.`key`\n" +
		"SET l.expires_at = GREATEST(l.expires_at, x.e)\n" +
		"WHERE l.token = {MARK}"

	// sqlShareForce deletes every shared row of the key. Parameter: key.
	sqlShareForce = "DELETE FROM {S} WHERE `key` = ?"

	// sqlFreeMarker frees the key's row from the marker. Parameter: key.
	sqlFreeMarker = "UPDATE {T} SET token = '', expires_at = {NOW}, metadata = '' WHERE `key` = ? AND token = {MARK}"

	// sqlShortest reads the shortest live grant's remaining µs (NULL for
	// none). Parameter: key.
	sqlShortest = "SELECT MIN(TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at)) FROM {S} WHERE `key` = ? AND writer = 0 AND expires_at > {NOW}"

	// sqlHolders reads the key's live grants (kind 0 exclusive, 1 shared)
	// and writer records (kind 2): kind, fence, remaining µs, metadata,
	// limit. Parameters: key, key.
	sqlHolders = "SELECT 0, fence, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at), metadata, 0 FROM {T}\n" +
		"WHERE `key` = ? AND token <> '' AND token <> {MARK} AND expires_at > {NOW}\n" +
		"UNION ALL\n" +
		"SELECT IF(writer = 1, 2, 1), fence, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at), metadata, share_limit FROM {S}\n" +
		"WHERE `key` = ? AND expires_at > {NOW}"
)
