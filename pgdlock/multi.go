package pgdlock

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

var (
	_ driver.MultiLocker = (*pgDriver)(nil)
	_ driver.MultiLocker = pollOnly{}
)

// multiRows is the most keys one AcquireMany statement takes; more are
// refused with errors.ErrUnsupported.
const multiRows = batchRows

// sqlAcquireMany is AcquireMany in one statement. The requests arrive as
// lists of keys, tokens and metadata (each element "x" and the bytes in
// hex, as sqlRefreshBatch's), $4 the TTL in µs. lk locks the rows of the
// keys in key order (FOR UPDATE reads each row's newest version, so
// concurrent calls wait for each other rather than deadlock, and what j
// judges is current); only when every key is free, expired or held by its
// request's token (the marker of shared grants is a live holder) do u
// take the existing rows (the next fence, or the same one for the same
// token within its lease) and n insert the missing ones. A row inserted
// by another transaction after the statement's snapshot makes n fail
// with a unique violation: nothing is changed, and the driver sends the
// statement again. Returns, per request: position, acquired, fence,
// holder µs (the shortest shared lease while the marker holds the row).
const sqlAcquireMany = `WITH v AS (
	SELECT decode(substr(x.k, 2), 'hex') AS k, decode(substr(x.t, 2), 'hex') AS t,
		convert_from(decode(substr(x.m, 2), 'hex'), 'UTF8') AS m, x.i
	FROM unnest(string_to_array($1::text, ','), string_to_array($2::text, ','), string_to_array($3::text, ','))
		WITH ORDINALITY AS x(k, t, m, i)
), lk AS (
	SELECT l."key", l.token, l.fence, l.expires_at FROM {T} AS l
	WHERE l."key" = ANY (ARRAY(SELECT k FROM v)) ORDER BY l."key" FOR UPDATE
), j AS (
	SELECT v.k, v.t, v.m, v.i, lk.token, lk.fence, lk.expires_at,
		lk."key" IS NULL OR lk.token = ''::bytea OR lk.expires_at <= clock_timestamp() OR lk.token = v.t AS free
	FROM v LEFT JOIN lk ON lk."key" = v.k
), ok AS (
	SELECT bool_and(free) AS all_free FROM j
), u AS (
	UPDATE {T} AS l SET
		fence      = CASE WHEN l.token = j.t AND l.expires_at > clock_timestamp() THEN l.fence ELSE l.fence + 1 END,
		token      = j.t,
		expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond',
		metadata   = j.m
	FROM j WHERE l."key" = j.k AND j.token IS NOT NULL AND (SELECT all_free FROM ok)
	RETURNING j.i, l.fence
), n AS (
	INSERT INTO {T} ("key", token, fence, expires_at, metadata)
	SELECT j.k, j.t, 1, clock_timestamp() + $4::bigint * interval '1 microsecond', j.m
	FROM j WHERE j.token IS NULL AND (SELECT all_free FROM ok) ORDER BY j.k
	RETURNING "key", fence
)
SELECT j.i, ok.all_free, coalesce((SELECT u.fence FROM u WHERE u.i = j.i), (SELECT n.fence FROM n WHERE n."key" = j.k), 0),
	CASE WHEN j.free THEN 0::bigint
		WHEN j.token = {MARK} THEN coalesce(
			(SELECT (EXTRACT(EPOCH FROM min(s.expires_at) - clock_timestamp()) * 1000000)::bigint
				FROM {S} AS s WHERE s."key" = j.k AND NOT s.writer AND s.fence > 0 AND s.expires_at > clock_timestamp()),
			(EXTRACT(EPOCH FROM j.expires_at - clock_timestamp()) * 1000000)::bigint)
		ELSE (EXTRACT(EPOCH FROM j.expires_at - clock_timestamp()) * 1000000)::bigint END
FROM j, ok`

// AcquireMany implements driver.MultiLocker with one statement
// (sqlAcquireMany) for up to 1000 keys.
func (d *pgDriver) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return nil, err
	}
	if len(reqs) > multiRows {
		return nil, fmt.Errorf("pgdlock: %d keys in one step, more than %d: %w", len(reqs), multiRows, errors.ErrUnsupported)
	}
	var us int64
	if len(reqs) > 0 {
		us = sqllease.Micros(reqs[0].TTL)
	}
	args := []any{
		hexList(len(reqs), func(i int) string { return reqs[i].Key }),
		hexList(len(reqs), func(i int) string { return reqs[i].Token }),
		hexList(len(reqs), func(i int) string { return cleanText(reqs[i].Metadata) }),
		us,
	}
	for range staleTries {
		res := make([]driver.Result, len(reqs))
		err := d.q.query(ctx, d.st.acquireMany, args, func(scan func(...any) error) error {
			var (
				i, fence, holderUS int64
				acquired           bool
			)
			if err := scan(&i, &acquired, &fence, &holderUS); err != nil {
				return err
			}
			if i < 1 || i > int64(len(reqs)) {
				return fmt.Errorf("acquire returned position %d of %d", i, len(reqs))
			}
			if acquired {
				if fence <= 0 {
					return fmt.Errorf("table %s returned fence %d", d.Table, fence)
				}
				res[i-1] = driver.Result{Acquired: true, Fence: uint64(fence)}
			} else if holderUS > 0 {
				res[i-1] = driver.Result{HolderTTL: sqllease.FromMicros(holderUS)}
			}
			return nil
		})
		var pe *pgconn.PgError
		switch {
		case err != nil && errors.As(err, &pe) && pe.Code == "23505":
			continue // a row made after the snapshot: again
		case err != nil && contention(err):
			return make([]driver.Result, len(reqs)), nil
		case err != nil:
			return nil, d.Wrap("acquire", err)
		}
		return res, nil
	}
	return make([]driver.Result, len(reqs)), nil
}

// AcquireMany implements driver.MultiLocker.
func (p pollOnly) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	return p.Locker.(*pgDriver).AcquireMany(ctx, reqs)
}
