package mysqldlock

import "strings"

// now is the server's current time in UTC with microseconds: independent of
// the session's time_zone, and constant within one statement.
const now = `UTC_TIMESTAMP(6)`

// The statements, with {T} standing for the quoted table name and {NOW} for
// now. The client sends keys, tokens, metadata and TTLs in microseconds,
// never a time.
const (
	// sqlCreateTable makes the lease table. key and token compare byte for
	// byte (VARBINARY); InnoDB indexes the 1024-byte key whole. token is
	// empty while the key is free. fence is the per-key grant counter; the
	// row outlives release so that it keeps increasing. expires_at is UTC.
	sqlCreateTable = "CREATE TABLE IF NOT EXISTS {T} (\n" +
		"\t`key`      VARBINARY(1024) NOT NULL,\n" +
		"\ttoken      VARBINARY(1024) NOT NULL DEFAULT '',\n" +
		"\tfence      BIGINT UNSIGNED NOT NULL DEFAULT 0,\n" +
		"\texpires_at DATETIME(6)     NOT NULL DEFAULT '1970-01-01 00:00:00',\n" +
		"\tmetadata   BLOB            NOT NULL,\n" +
		"\tPRIMARY KEY (`key`)\n" +
		") ENGINE=InnoDB"

	// sqlTableExists counts tables named ? in schema ? (NULL: the
	// connection's database).
	sqlTableExists = `SELECT COUNT(*) FROM information_schema.tables
WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?`

	// sqlCheckTable fails when the table is missing or has the wrong shape.
	sqlCheckTable = "SELECT `key`, token, fence, expires_at, metadata FROM {T} LIMIT 0"

	// sqlAcquire takes the key in one statement when there is no row, or the
	// row is free, expired or held by the same token. When it takes an
	// existing row it passes the fence through LAST_INSERT_ID(expr), which
	// the server returns as the statement's insert id: fence+1 for a new
	// holder, the same fence for the same token within its lease. A new row
	// (fence 1) and a refusal both leave the insert id at 0, and are told
	// apart by sqlState.
	//
	// The assignments are ordered so that the result is the same whether
	// the server evaluates them left to right on updated values (MySQL,
	// MariaDB by default) or all on the old row (MariaDB's
	// SIMULTANEOUS_ASSIGNMENT): no condition reads a column assigned
	// before it, except expires_at's, which reads token — equal to ours
	// exactly when the row is being taken.
	//
	// Parameters: key, token, ttl µs, metadata, then token, token,
	// metadata, token, token, token, ttl µs.
	sqlAcquire = "INSERT INTO {T} (`key`, token, fence, expires_at, metadata)\n" +
		"VALUES (?, ?, 1, {NOW} + INTERVAL ? MICROSECOND, ?)\n" +
		"ON DUPLICATE KEY UPDATE\n" +
		"\tfence = IF(token = ? AND expires_at > {NOW}, LAST_INSERT_ID(fence),\n" +
		"\t\tIF(token = '' OR expires_at <= {NOW}, LAST_INSERT_ID(fence + 1), fence)),\n" +
		"\tmetadata = IF(token = '' OR expires_at <= {NOW} OR token = ?, ?, metadata),\n" +
		"\ttoken = IF(token = '' OR expires_at <= {NOW} OR token = ?, ?, token),\n" +
		"\texpires_at = IF(token = '' OR expires_at <= {NOW} OR token = ?, {NOW} + INTERVAL ? MICROSECOND, expires_at)"

	// sqlState reads a key's holder, fence, remaining lease in µs
	// (negative when lapsed) and metadata.
	sqlState = "SELECT token, fence, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at), metadata FROM {T} WHERE `key` = ?"

	// sqlRefresh extends a live lease of the token. Parameters: ttl µs,
	// key, token.
	sqlRefresh = "UPDATE {T} SET expires_at = {NOW} + INTERVAL ? MICROSECOND\n" +
		"WHERE `key` = ? AND token = ? AND expires_at > {NOW}"

	// sqlRefreshBatch is sqlRefresh for many locks at once: the same owner
	// and liveness check and the same expiry on the server's clock, per
	// row. {ROWS} stands for a derived table with one row per lock, (key,
	// token, ttl µs), built by refreshBatchSQL. MySQL updates each row of
	// the table at most once; the fence is not touched.
	sqlRefreshBatch = "UPDATE {T} AS l JOIN (\n\t{ROWS}\n) AS v ON l.`key` = v.k AND l.token = v.t\n" +
		"SET l.expires_at = {NOW} + INTERVAL v.us MICROSECOND\n" +
		"WHERE l.expires_at > {NOW}"

	// sqlStates reads the holder and remaining lease in µs of several keys;
	// the caller appends the list "(?, ?, ...)".
	sqlStates = "SELECT `key`, token, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at) FROM {T} WHERE `key` IN "

	// sqlRelease frees a live lease of the token, keeping the row and its
	// fence; expires_at records the release time. Parameters: key, token.
	sqlRelease = "UPDATE {T} SET token = '', expires_at = {NOW}, metadata = ''\n" +
		"WHERE `key` = ? AND token = ? AND expires_at > {NOW}"
)

const (
	// sqlList reads up to ? held keys k with ? <= k < ? (VARBINARY: bytes,
	// no padding, no case folding), in key order, from the primary key:
	// key, fence, remaining µs, metadata. Parameters: lo, hi, n.
	sqlList = "SELECT `key`, fence, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at), metadata FROM {T}\n" +
		"WHERE `key` >= CAST(? AS BINARY) AND `key` < CAST(? AS BINARY) AND token <> '' AND expires_at > {NOW}\n" +
		"ORDER BY `key` LIMIT ?"

	// sqlForceRelease frees the live lease of the holder that sqlState
	// saw, whatever its token, keeping the row and its fence: it changes
	// nothing when the key has changed hands (or was released, or expired)
	// since. Parameters: key, then token, fence and metadata as read.
	sqlForceRelease = "UPDATE {T} SET token = '', expires_at = {NOW}, metadata = ''\n" +
		"WHERE `key` = ? AND token = ? AND fence = ? AND metadata = ? AND token <> '' AND expires_at > {NOW}"
)

// statements holds the SQL for one table.
type statements struct {
	create, check, acquire, state, refresh, refreshBatch, states, release string
	list, forceRelease                                                    string

	// shared leases
	createShares, checkShares, lockState, dropLapsed, shareRecord  string
	shareRefusal, shareDrop, markerExtend, shareLive, shareRefresh string
	tokenDelete, writerDelete, writerRecord, shareSync, shareForce string
	freeMarker, shortest, holders                                  string
	lockKeys, liveShares, shareRefreshBatch, markerFollow          string
	shareGrant                                                     namedSQL
}

func newStatements(quoted, sharesQuoted string) statements {
	r := strings.NewReplacer("{T}", quoted, "{S}", sharesQuoted, "{NOW}", now, "{MARK}", markerSQL)
	return statements{
		createShares: r.Replace(sqlCreateShares),
		checkShares:  r.Replace(sqlCheckShares),
		lockState:    r.Replace(sqlLockState),
		dropLapsed:   r.Replace(sqlDropLapsed),
		shareRecord:  r.Replace(sqlShareRecord),
		shareRefusal: r.Replace(sqlShareRefusal),
		shareDrop:    r.Replace(sqlShareDrop),
		markerExtend: r.Replace(sqlMarkerExtend),
		shareLive:    r.Replace(sqlShareLive),
		shareRefresh: r.Replace(sqlShareRefresh),
		tokenDelete:  r.Replace(sqlTokenDelete),
		writerDelete: r.Replace(sqlWriterDelete),
		writerRecord: r.Replace(sqlWriterRecord),
		shareSync:    r.Replace(sqlShareSync),
		shareForce:   r.Replace(sqlShareForce),
		freeMarker:   r.Replace(sqlFreeMarker),
		shortest:     r.Replace(sqlShortest),
		holders:      r.Replace(sqlHolders),

		lockKeys:          r.Replace(sqlLockKeys),
		liveShares:        r.Replace(sqlLiveShares),
		shareRefreshBatch: r.Replace(sqlShareRefreshBatch),
		markerFollow:      r.Replace(sqlMarkerFollow),
		shareGrant: bindNames(r.Replace(strings.NewReplacer(
			"{G}", sqlShareVerdict, "{K}", sqlShareLapsed, "{E}", sqlShareLongest).Replace(sqlShareGrant))),

		create:       r.Replace(sqlCreateTable),
		check:        r.Replace(sqlCheckTable),
		acquire:      r.Replace(sqlAcquire),
		state:        r.Replace(sqlState),
		refresh:      r.Replace(sqlRefresh),
		refreshBatch: r.Replace(sqlRefreshBatch),
		states:       r.Replace(sqlStates),
		release:      r.Replace(sqlRelease),
		list:         r.Replace(sqlList),
		forceRelease: r.Replace(sqlForceRelease),
	}
}
