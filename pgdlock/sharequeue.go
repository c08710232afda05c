package pgdlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// The queue of shared waiters. A waiting permit or reader is a row of the
// companion table {S} beside the grants: writer false, a negative fence
// (minus the server's clock in µs when it joined: its place, earliest
// first, ties by token), its limit, an expiry that each of its statements
// moves to TTL from then, and as metadata the waiter's name, a random id
// that is not its token. A release that makes room notifies the first
// waiters it lets in, each on the table's channel with payload "w:" and
// its name; a waiter listens for its own payload and for the key's, so it
// sends a statement only when a release may have let it in, not on every
// release of the key.
const (
	// sqlQueueNext is the key's queued shares other than $2's, in queue
	// order, numbered from 1 (n), with their names (metadata).
	sqlQueueNext = `SELECT metadata, row_number() OVER (ORDER BY fence DESC, token) AS n
	FROM {S} WHERE "key" = $1 AND NOT writer AND fence < 0 AND token <> $2 AND expires_at > clock_timestamp()`

	// sqlAcquireQueued is AcquireSharedQueued's statement (after
	// sqlShareState), with $6 the waiter's name. s0 counts the queued
	// shares ahead of the token's (all of them while it has none); s judges
	// as sqlAcquireShared does, and queues (verdict 'x' an exclusive holder,
	// 'w' a waiting writer, 'q' the limit reached by the grants and the
	// shares ahead) where sqlAcquireShared refuses. A grant ('g', or 'r'
	// renewing the token's grant) is made as there, turning the token's
	// queued row into its grant. A queued verdict writes the token's row
	// (e), keeping its place. When the token joins the queue for the limit
	// ('q' with no place yet), b writes the key's row anew, requiring that
	// it is the version s judged (as k does for a grant): a release in
	// flight then finds the row changed and is judged again with a
	// snapshot that has the new row, so it notifies this waiter, and a
	// release that committed first makes this statement stale ('s') and
	// sent again. Returns (verdict, fence, holder µs, stored limit).
	sqlAcquireQueued = sqlShareState + `, s0 AS (
	SELECT r.x, r.token AS rtoken, r.expires_at AS rend, g.*,
		(SELECT count(*) FROM {S} AS w WHERE w."key" = $1 AND NOT w.writer AND w.fence < 0 AND w.token <> $2
			AND w.expires_at > clock_timestamp()
			AND (g.qown IS NULL OR w.fence > g.qown OR (w.fence = g.qown AND w.token < $2))) AS ahead
	FROM g LEFT JOIN r ON true
), s AS (
	SELECT s0.*,
		CASE
			WHEN s0.rtoken <> ''::bytea AND s0.rtoken <> {MARK} AND s0.rend > clock_timestamp() THEN 'x'
			WHEN s0.grants > 0 AND s0.lim <> $5 THEN 'm'
			WHEN s0.grants = 0 AND s0.qlim <> $5 THEN 'm'
			WHEN s0.own > 0 AND s0.rtoken = {MARK} THEN 'r'
			WHEN s0.writers > 0 THEN 'w'
			WHEN $5 > 0 AND s0.grants + s0.ahead >= $5 THEN 'q'
			ELSE 'g'
		END AS verdict,
		CASE WHEN s0.rtoken <> {MARK} AND s0.rend > clock_timestamp() THEN (EXTRACT(EPOCH FROM s0.rend - clock_timestamp()) * 1000000)::bigint ELSE coalesce((EXTRACT(EPOCH FROM s0.grant_end - clock_timestamp()) * 1000000)::bigint, (EXTRACT(EPOCH FROM s0.writer_end - clock_timestamp()) * 1000000)::bigint, 0) END AS holder_us
	FROM s0
)` + sqlShareGrant + `, b AS (
	UPDATE {T} AS l SET fence = l.fence
	WHERE l."key" = $1 AND l.xmin = (SELECT x FROM s) AND (SELECT verdict = 'q' AND qown IS NULL FROM s)
	RETURNING 1
), e AS (
	INSERT INTO {S} ("key", writer, token, fence, expires_at, metadata, share_limit)
	SELECT $1, false, $2, coalesce(s.qown, -(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint),
		clock_timestamp() + $3::bigint * interval '1 microsecond', $6 || $4, $5
	FROM s
	WHERE s.verdict IN ('x', 'w') OR (s.verdict = 'q' AND (s.qown IS NOT NULL OR s.x IS NULL OR EXISTS (SELECT FROM b)))
	ON CONFLICT ("key", writer, token) DO UPDATE SET fence = EXCLUDED.fence, expires_at = EXCLUDED.expires_at,
		metadata = EXCLUDED.metadata, share_limit = EXCLUDED.share_limit
	RETURNING 1
), d AS (
	DELETE FROM {S} WHERE ctid IN (SELECT ctid FROM {S}
		WHERE "key" = $1 AND token <> $2 AND expires_at <= clock_timestamp() FOR UPDATE SKIP LOCKED)
)
SELECT CASE
		WHEN s.verdict IN ('g', 'r') AND NOT EXISTS (SELECT FROM a) THEN 's'
		WHEN s.verdict = 'q' AND NOT EXISTS (SELECT FROM e) THEN 's'
		ELSE s.verdict END,
	coalesce((SELECT fence FROM a), 0), s.holder_us, coalesce(s.lim, s.qlim, 0)
FROM s`

	// sqlLeaveQueue removes the token's queued share, and when it went
	// (and no writer waits) {NOTIFY} notifies the queued shares its going
	// lets in: those within the limit, counting the grants. Returns the
	// rows removed.
	sqlLeaveQueue = sqlShareState + `, d AS (
	DELETE FROM {S} WHERE "key" = $1 AND NOT writer AND fence < 0 AND token = $2
	RETURNING 1
)
SELECT (SELECT count(*) FROM d), {NOTIFY} FROM g`

	leaveNotify = `(SELECT count(*) FROM (
	SELECT pg_notify($3, 'w:' || left(q.metadata, 32)) FROM (SELECT FROM d LIMIT 1) AS x, ({NEXT}) AS q
	WHERE g.writers = 0 AND q.n <= CASE WHEN coalesce(g.lim, g.qlim, 0) = 0 THEN 2147483647 ELSE coalesce(g.lim, g.qlim) - g.grants END
) AS n)`
	leaveNoNotify = `0::bigint`
)

var _ driver.SharedQueuer = (*pgDriver)(nil)

// queuePoll bounds how long a queued share waits without a notification
// before it sends its statement again (which also keeps its row alive);
// a third of the TTL when that is shorter. A notification lost to a race
// the statements do not close (a queued share ahead that left while
// another joined) costs at most this. (A variable so that tests can
// lengthen it.)
var queuePoll = 2 * time.Second

// AcquireSharedQueued implements driver.SharedQueuer: the share waits as
// a row of the key's queue (sqlAcquireQueued), and sends its statement
// again only when notified: by its own payload (a release or a leave let
// it in), by the key's (an exclusive release, or a shared one while
// writers wait), or by the listener's reconnection; or after queuePoll, or
// when the lease that holds it back ends. Without a listening connection
// it polls. A statement that meets a connection failure (a server restart,
// a dropped connection) is sent again after a pause (10 ms doubling to
// 500 ms) until ctx ends: the wait rides out the outage.
func (d *pgDriver) AcquireSharedQueued(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	if err := d.Check(ctx); err != nil {
		return driver.Result{}, err
	}
	if err := d.leaves.await(ctx, req.Key); err != nil {
		return driver.Result{}, err
	}
	var idb [16]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return driver.Result{}, fmt.Errorf("pgdlock: naming a queued share: %w", err)
	}
	name := hex.EncodeToString(idb[:])
	var own, keyCh, closed <-chan struct{}
	if d.lis != nil {
		closed = d.lis.ctx.Done()
		defer d.lis.expectGrant(name)()
		// Both watches before the first statement: a release after it
		// is heard.
		if ch, stop, err := d.lis.watch(ctx, "w:"+name); err == nil {
			defer stop()
			own = ch
			if ch, stop, err := d.lis.watch(ctx, payload(req.Key)); err == nil {
				defer stop()
				keyCh = ch
			}
		}
	}
	args := []any{[]byte(req.Key), []byte(req.Token), sqllease.Micros(req.TTL), cleanText(req.Metadata), req.Limit, name}
	poll := min(queuePoll, max(req.TTL/3, time.Millisecond))
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	stale := 0
	// joined is when the statement that last wrote the queued row was
	// sent: a release that grants the row keeps the expiry it set.
	var joined time.Time
	var pause time.Duration // before a statement sent again after a connection failure
	for {
		sent := time.Now()
		var (
			verdict         string
			fence, holderUS int64
			limit           int
		)
		_, err := d.q.lockedQueryRow(ctx, d.st.lockRow, 1, d.st.acquireQueued, args, &verdict, &fence, &holderUS, &limit)
		switch {
		case err != nil && contention(err):
			verdict = "s"
		case err != nil:
			werr := d.Wrap("acquire shared", err)
			if errors.Is(werr, driver.ErrUnavailable) && d.Check(ctx) == nil {
				// The connection failed, not the request: a waiter rides
				// it out until its ctx ends. The statement may have been
				// applied; the next one finds its grant (verdict 'r') or
				// its place.
				pause = min(max(2*pause, 10*time.Millisecond), 500*time.Millisecond)
				t := time.NewTimer(pause)
				select {
				case <-t.C:
					continue
				case <-ctx.Done():
				case <-closed:
				}
				t.Stop()
			}
			d.abandon(req.Key, req.Token)
			if cerr := d.Check(ctx); cerr != nil {
				return driver.Result{}, cerr
			}
			return driver.Result{}, werr
		}
		pause = 0
		wait := poll
		switch verdict {
		case "g", "r":
			if fence <= 0 {
				d.abandon(req.Key, req.Token)
				return driver.Result{}, fmt.Errorf("pgdlock: acquire shared: table %s returned fence %d", d.Table, fence)
			}
			return driver.Result{Acquired: true, Fence: uint64(fence), ValidUntil: sent.Add(req.TTL)}, nil
		case "m":
			if !joined.IsZero() {
				d.abandon(req.Key, req.Token)
			}
			return driver.Result{}, fmt.Errorf("%w: pgdlock: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, req.Key, limit, req.Limit)
		case "s":
			// The key's row changed under the statement: again at once,
			// then with a short pause while it keeps changing.
			if stale++; stale < staleTries {
				continue
			}
			wait = time.Millisecond
		default: // "x", "w", "q": queued
			joined, stale = sent, 0
			if holderUS > 0 {
				wait = min(wait, sqllease.FromMicros(holderUS)+time.Millisecond)
			}
			if own == nil {
				// No notifications: poll as the portable layer would.
				wait = min(wait, 50*time.Millisecond)
			}
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-own:
			// A release may have granted the row itself: its lease runs
			// from joined. Counted from there, a validity shorter than
			// half the TTL is renewed by the statement instead.
			if f, ok := d.lis.granted(name); ok && time.Until(joined.Add(req.TTL)) > req.TTL/2 {
				return driver.Result{Acquired: true, Fence: f, ValidUntil: joined.Add(req.TTL)}, nil
			}
		case <-keyCh:
		case <-timer.C:
		case <-ctx.Done():
			d.abandon(req.Key, req.Token)
			return driver.Result{}, ctx.Err()
		case <-closed:
			d.abandon(req.Key, req.Token)
			return driver.Result{}, driver.ErrClosed
		}
		if err := d.Check(ctx); err != nil {
			d.abandon(req.Key, req.Token)
			return driver.Result{}, err
		}
	}
}

// abandon removes, in the background, what a queued share that stopped
// waiting may have left: its queued row or, when there is none (a release
// granted it, or a statement whose outcome is unknown did), its grant,
// released as ReleaseShared does. The driver's later calls on the key wait
// for it.
func (d *pgDriver) abandon(key, token string) {
	done := d.leaves.add(key)
	go func() {
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), abandonTimeout)
		defer cancel()
		st, args := d.st.leaveQueue, []any{[]byte(key), []byte(token)}
		if d.lis != nil {
			st, args = d.st.leaveQueueNotify, append(args, d.lis.channel)
		}
		var removed, notified int64
		if _, err := d.q.queryRow(ctx, st, args, &removed, &notified); err == nil && removed > 0 {
			return
		}
		_ = d.releaseShare(ctx, key, token)
	}()
}

// abandonTimeout bounds abandon's statements.
const abandonTimeout = 10 * time.Second

// leaves tracks the background removals of abandoned queued shares, per
// key, so that the driver's later calls on a key come after them.
type leaves struct {
	mu      sync.Mutex
	pending map[string][]chan struct{}
}

// add registers a removal for key; the returned func marks it done.
func (l *leaves) add(key string) func() {
	ch := make(chan struct{})
	l.mu.Lock()
	if l.pending == nil {
		l.pending = make(map[string][]chan struct{})
	}
	l.pending[key] = append(l.pending[key], ch)
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		list := l.pending[key]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(l.pending, key)
		} else {
			l.pending[key] = list
		}
		l.mu.Unlock()
		close(ch)
	}
}

// await waits for the removals under way for key, or for ctx.
func (l *leaves) await(ctx context.Context, key string) error {
	l.mu.Lock()
	list := append([]chan struct{}(nil), l.pending[key]...)
	l.mu.Unlock()
	for _, ch := range list {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// awaitAll waits for every removal under way, as Close does before the
// pool closes.
func (l *leaves) awaitAll() {
	l.mu.Lock()
	var list []chan struct{}
	for _, chs := range l.pending {
		list = append(list, chs...)
	}
	l.mu.Unlock()
	for _, ch := range list {
		<-ch
	}
}

// queueStatements returns sqlAcquireQueued and sqlLeaveQueue (without and
// with notifications) for replacer r.
func queueStatements(r replacer) (acquire, leave, leaveNotifying string) {
	return r.Replace(sqlAcquireQueued),
		r.Replace(strings.Replace(sqlLeaveQueue, "{NOTIFY}", leaveNoNotify, 1)),
		r.Replace(strings.Replace(sqlLeaveQueue, "{NOTIFY}", leaveNotify, 1))
}
