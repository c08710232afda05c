package mysqldlock

import "strings"

// The shared-lease statements. Shared grants and waiting writers are rows
// of the companion table {S} (the lock table's name plus "_shares"); while
// a key has live shared grants its row in the lock table is held by the
// marker token {MARK} (0xff then "dlock:shared": never valid UTF-8, so no
// owner token), with the key's fence counter, the longest shared lease as
// its expiry and the newest grant's metadata. The exclusive statements then
// refuse the key as held, unchanged, and Inspect and List report it as the
// contract says.
//
// Every statement that adds or extends a key's shared grants or records a
// waiting writer first holds the lock on the key's row (always in that
// order: the row, then its shared rows) until its transaction ends, and
// reads the shared rows only after it has that lock: with locking reads,
// which see the newest committed rows, or (at READ COMMITTED) with a read
// view the statement takes after the lock, so that no change of the key's
// grants can commit between the read and the write. A release deletes its
// grant first, on its own, and then makes the row follow the grants left
// under the row's lock: in between the marker covers more than the live
// grants, never less.
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

	// sqlLockState is sqlState as a locking read.
	sqlLockState = "SELECT token, fence, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at), metadata FROM {T} WHERE `key` = ? FOR UPDATE"

	// sqlShareGrant is the judgement and the lock-table half of a shared
	// acquire, in one INSERT ... ON DUPLICATE KEY UPDATE (the first
	// statement of the acquire's transaction, whose row lock it holds to
	// the end). A key without a row gets one holding the marker with fence
	// 1. Otherwise the locked row is judged with the verdict {G}: -3 a live
	// exclusive holder, -1 live grants of another limit, the token's own
	// fence when it has a live grant (renewed, keeping its fence), -2 full
	// (the limit reached, or a live waiting writer), 0 granted. For 0 the
	// fence goes up by one; for 0 and a renewal the row takes the marker,
	// the longest of the live grants' and the new lease's expiry, and the
	// new metadata when the grant is the newest. The insert id
	// (LAST_INSERT_ID(expr), which every path sets) is the grant's fence,
	// plus lapsedFlag when the key has lapsed shared rows of other tokens
	// or writers, or 0 for a refusal.
	//
	// {G} reads the row's token and expiry and the shared rows, so its
	// value is the same whether the server evaluates the assignments left
	// to right on updated values (MySQL, MariaDB by default) or all on the
	// old row (MariaDB's SIMULTANEOUS_ASSIGNMENT): token is assigned only
	// when {G} >= 0, which a marker keeps, and expires_at, the last, is not
	// read by any condition after it. The subqueries name the key as a
	// parameter; they are evaluated with the row's values, after the row
	// is locked.
	//
	// Parameters are named ($key, $tok, $us, $meta, $lim); bindNames makes
	// them placeholders.
	sqlShareGrant = "INSERT INTO {T} (`key`, token, fence, expires_at, metadata)\n" +
		"VALUES ($key, {MARK}, LAST_INSERT_ID(1), {NOW} + INTERVAL $us MICROSECOND, $meta)\n" +
		"ON DUPLICATE KEY UPDATE\n" +
		"\tfence = fence + IF({G} = 0, 1, 0) + 0 * LAST_INSERT_ID(IF({G} < 0, 0, IF({G} = 0, fence + 1, {G}) + {K})),\n" +
		"\tmetadata = IF({G} IN (0, fence), $meta, metadata),\n" +
		"\ttoken = IF({G} >= 0, {MARK}, token),\n" +
		"\texpires_at = IF({G} >= 0, GREATEST({NOW} + INTERVAL $us MICROSECOND, COALESCE({E}, {NOW})), expires_at)"

	// sqlShareVerdict is {G} of sqlShareGrant.
	sqlShareVerdict = "IF(token <> '' AND token <> {MARK} AND expires_at > {NOW}, -3, (SELECT CASE\n" +
		"\t\tWHEN SUM(writer = 0 AND share_limit <> $lim) > 0 THEN -1\n" +
		"\t\tWHEN MAX(IF(writer = 0 AND token = $tok, fence, 0)) > 0 THEN MAX(IF(writer = 0 AND token = $tok, fence, 0))\n" +
		"\t\tWHEN SUM(writer = 1) > 0 OR ($lim > 0 AND SUM(writer = 0) >= $lim) THEN -2\n" +
		"\t\tELSE 0 END\n" +
		"\tFROM {S} WHERE `key` = $key AND expires_at > {NOW}))"

	// sqlShareLapsed is {K} of sqlShareGrant: lapsedFlag when the key has
	// lapsed shared rows other than the token's grant (which the grant's
	// row overwrites), else 0.
	sqlShareLapsed = "(SELECT IF(COUNT(*) > 0, 4611686018427387904, 0) FROM {S}\n" +
		"\tWHERE `key` = $key AND expires_at <= {NOW} AND (writer = 1 OR token <> $tok))"

	// sqlShareLongest is {E} of sqlShareGrant: the longest live grant's
	// expiry (NULL for none).
	sqlShareLongest = "(SELECT MAX(expires_at) FROM {S} WHERE `key` = $key AND writer = 0 AND expires_at > {NOW})"

	// sqlShareRecord records the grant sqlShareGrant gave, or renews the
	// token's grant (or overwrites its lapsed one). Parameters: key,
	// token, fence, ttl µs, metadata, limit, then fence, ttl µs,
	// metadata, limit.
	sqlShareRecord = "INSERT INTO {S} (`key`, writer, token, fence, expires_at, metadata, share_limit)\n" +
		"VALUES (?, 0, ?, ?, {NOW} + INTERVAL ? MICROSECOND, ?, ?)\n" +
		"ON DUPLICATE KEY UPDATE fence = ?, expires_at = {NOW} + INTERVAL ? MICROSECOND, metadata = ?, share_limit = ?"

	// sqlShareRefusal reads why sqlShareGrant refused: the row's token and
	// remaining µs, the shortest live grant's and waiting writer's
	// remaining µs (NULL for none), and the limit of a live grant of
	// another limit than ? (NULL for none). Parameters: key, key, key,
	// limit, key.
	sqlShareRefusal = "SELECT token, TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at),\n" +
		"\t(SELECT MIN(TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at)) FROM {S} WHERE `key` = ? AND writer = 0 AND expires_at > {NOW}),\n" +
		"\t(SELECT MIN(TIMESTAMPDIFF(MICROSECOND, {NOW}, expires_at)) FROM {S} WHERE `key` = ? AND writer = 1 AND expires_at > {NOW}),\n" +
		"\t(SELECT share_limit FROM {S} WHERE `key` = ? AND writer = 0 AND expires_at > {NOW} AND share_limit <> ? LIMIT 1)\n" +
		"FROM {T} WHERE `key` = ?"

	// sqlShareDrop deletes the token's live grant (a release's first
	// statement, on its own). Parameters: key, token.
	sqlShareDrop = "DELETE FROM {S} WHERE `key` = ? AND writer = 0 AND token = ? AND expires_at > {NOW}"

	// sqlDropLapsed deletes the key's lapsed shared rows. Parameter: key.
	sqlDropLapsed = "DELETE FROM {S} WHERE `key` = ? AND expires_at <= {NOW}"

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

	// sqlTokenDelete deletes the token's rows of the key (its writer
	// record, a lapsed grant). Parameters: key, token.
	sqlTokenDelete = "DELETE FROM {S} WHERE `key` = ? AND token = ?"

	// sqlWriterDelete deletes the token's writer record. Parameters: key,
	// token.
	sqlWriterDelete = "DELETE FROM {S} WHERE `key` = ? AND writer = 1 AND token = ?"

	// sqlWriterRecord records the token as a waiting writer. Parameters:
	// key, token, ttl µs, ttl µs.
	sqlWriterRecord = "INSERT INTO {S} (`key`, writer, token, fence, expires_at, metadata, share_limit)\n" +
		"VALUES (?, 1, ?, 0, {NOW} + INTERVAL ? MICROSECOND, '', 0)\n" +
		"ON DUPLICATE KEY UPDATE expires_at = {NOW} + INTERVAL ? MICROSECOND"

	// sqlShareSync makes the key's row follow its live grants, reading
	// them once it has locked the row: the marker with the longest lease and the newest grant's
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

// lapsedFlag is added to the fence in sqlShareGrant's insert id when the
// key has lapsed shared rows to delete (a fence never reaches it).
const lapsedFlag = 1 << 62

// namedSQL is a statement whose parameters are named in its text ($key,
// $tok, ...): text has a placeholder for each, names lists them in order.
type namedSQL struct {
	text  string
	names []string
}

// bindNames turns the $names of s (ASCII lower-case letters after '$')
// into placeholders.
func bindNames(s string) namedSQL {
	var (
		b     strings.Builder
		names []string
	)
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		j := i + 1
		for j < len(s) && s[j] >= 'a' && s[j] <= 'z' {
			j++
		}
		names = append(names, s[i+1:j])
		b.WriteByte('?')
		i = j - 1
	}
	return namedSQL{text: b.String(), names: names}
}

// args lists the values of the statement's placeholders, in order.
func (n namedSQL) args(vals map[string]any) []any {
	out := make([]any, len(n.names))
	for i, name := range n.names {
		v, ok := vals[name]
		if !ok {
			panic("mysqldlock: no value for parameter $" + name)
		}
		out[i] = v
	}
	return out
}
