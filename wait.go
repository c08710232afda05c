package dlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// waiter is one TryLock or Lock call on its way to a grant. It makes the
// attempts and, for Lock, waits between them: first for the client's turn on
// the key (keyTurn), then on the retry strategy's backoff, woken early by a
// release notification, a release by this client, or the holder's lease
// running out. A driver with its own queue (driver.Queuer) does the whole
// wait instead.
//
// The backend-specific hints of driver.Hints and driver.Queued are set in
// attemptRequest (what the waiter tells the driver) and read in watch and
// nextWait (how an attempt that queued the caller changes the wait); acquire
// also sends a call marked Hints.Wait to a driver.Queuer.
type waiter struct {
	c     *Client
	ctx   context.Context
	req   driver.Request
	cfg   lockConfig
	try   bool
	share *share // a shared attempt's limit; nil for exclusive
	start time.Time

	attempts int      // attempts made so far
	turn     *keyTurn // the client's turn on the key (Lock only)
	lastErr  error    // the last attempt's error, while riding it out
	writer   bool     // the token is recorded as a waiting writer
	timer    *time.Timer

	// waitStart is when the call began to wait (EventWaiting); zero while
	// it has not. waitEnded says EventWaited was emitted.
	waitStart time.Time
	waitEnded bool
	obs       observers // the call's CallObservers
}

// op is the call's Event.Op.
func (w *waiter) op() string { return opOf(w.try, w.share) }

// opOf is the Event.Op of an acquisition: try or not, exclusive (sh nil)
// or shared.
func opOf(try bool, sh *share) string {
	switch {
	case sh == nil && try:
		return "try_lock"
	case sh == nil:
		return "lock"
	case sh.limit > 0 && try:
		return "try_acquire"
	case sh.limit > 0:
		return "acquire"
	case try:
		return "try_rlock"
	}
	return "rlock"
}

// emit sends e to the client's event hooks and to the call's observers.
func (w *waiter) emit(e Event) {
	e.Backend = w.c.caps.Backend
	w.c.emit(e)
	w.obs.event(e)
}

// beginWait emits EventWaiting once, when the call starts to wait.
func (w *waiter) beginWait() {
	if w.waitStart.IsZero() {
		w.waitStart = time.Now()
		w.emit(Event{Kind: EventWaiting, Op: w.op(), Key: w.req.Key, Attempts: w.attempts})
	}
}

// endWait emits EventWaited once for a call that began to wait, with the
// time since it began and err (nil when it got the lock).
func (w *waiter) endWait(err error) {
	if w.waitStart.IsZero() || w.waitEnded {
		return
	}
	w.waitEnded = true
	w.emit(Event{Kind: EventWaited, Op: w.op(), Key: w.req.Key, Duration: time.Since(w.waitStart), Attempts: w.attempts, Err: err})
}

// acquire is TryLock (try) and Lock: it validates key and opts, then makes
// one attempt, or, for Lock, hands the wait to the driver's Queuer when there
// is one and otherwise waits for the client's turn on key and retries until
// the key is granted, the strategy gives up, ctx ends or the client closes.
func (c *Client) acquire(ctx context.Context, key string, opts []LockOption, try bool) (*Lock, error) {
	return c.acquireAs(ctx, key, opts, try, nil)
}

// share is what makes an attempt shared: the key's limit of shared grants
// (0 for no limit).
type share struct{ limit int }

// acquireAs is acquire for an exclusive grant (sh nil) or a shared one,
// seen by the client's CallHooks.
func (c *Client) acquireAs(ctx context.Context, key string, opts []LockOption, try bool, sh *share) (*Lock, error) {
	ctx, obs := c.startCall(ctx, Call{Op: opOf(try, sh), Key: key})
	if obs == nil {
		return c.acquireCall(ctx, key, opts, try, sh, nil, nil)
	}
	var r CallResult
	l, err := c.acquireCall(ctx, key, opts, try, sh, obs, &r.Attempts)
	r.Err = err
	if l != nil {
		r.Fence = l.fence
	}
	obs.end(r)
	return l, err
}

// acquireCall is acquireAs's call; it sets *attempts (when not nil) to the
// attempts it made.
func (c *Client) acquireCall(ctx context.Context, key string, opts []LockOption, try bool, sh *share, obs observers, attempts *int) (*Lock, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if c.isClosed() {
		return nil, ErrClosed
	}
	if sh != nil && c.sharer == nil {
		return nil, fmt.Errorf("%w: shared leases (semaphores, RW locks)", ErrUnsupported)
	}
	cfg, err := c.lockConfig(opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w := &waiter{c: c, ctx: ctx, cfg: cfg, try: try, share: sh, start: time.Now(), obs: obs}
	w.req = w.attemptRequest(key)
	if attempts != nil {
		defer func() { *attempts = w.attempts }()
	}
	l, err := w.acquire()
	if err != nil {
		w.endWait(err)
		w.emit(Event{Kind: EventFailed, Op: w.op(), Key: key, Duration: time.Since(w.start), Attempts: w.attempts, Err: err})
	}
	return l, err
}

// acquire is the call's attempts and wait, after acquireAs's checks.
func (w *waiter) acquire() (*Lock, error) {
	c, sh, try := w.c, w.share, w.try
	if w.req.Hints.Wait && (sh == nil && c.queuer != nil || sh != nil && c.shareQueuer != nil) {
		return w.queued()
	}
	if !try {
		giveUp, err := w.takeTurn()
		if err != nil {
			return nil, w.ended(err)
		}
		defer giveUp()
	}
	defer func() {
		if w.timer != nil {
			w.timer.Stop()
		}
	}()
	return w.run()
}

// attemptRequest is the request every attempt of the call sends, hints
// included.
func (w *waiter) attemptRequest(key string) driver.Request {
	return driver.Request{Key: key, Token: w.cfg.token, TTL: w.cfg.ttl, Metadata: w.cfg.metadata,
		Hints: driver.Hints{
			AutoRefresh: w.cfg.autoRefresh,
			// A call that may wait: Lock with a strategy that retries.
			Wait: !w.try && w.cfg.retry.NextBackoff(1) >= 0,
		}}
}

// run makes attempts until one is granted or the wait ends.
func (w *waiter) run() (*Lock, error) {
	c, key := w.c, w.req.Key
	for {
		w.attempts++
		res, sent, err := w.attempt()
		if err != nil {
			return nil, w.ended(err)
		}
		if res.Acquired {
			if l := w.grant(res, sent); l != nil {
				return l, nil
			}
			// The reply came after the validity deadline (not a grant), or
			// the client was closed meanwhile.
			if c.isClosed() {
				return nil, ErrClosed
			}
			// The late grant's release may still be on its way (to some
			// nodes of a quorum).
			if err := w.renewToken(); err != nil {
				return nil, err
			}
		}
		if w.try {
			return nil, fmt.Errorf("%w: %q is held by another owner", ErrNotAcquired, key)
		}
		w.beginWait()
		if w.watch(res) {
			continue
		}
		wait, ok := w.nextWait(res)
		if !ok {
			return nil, w.ended(fmt.Errorf("%w: %q is held by another owner (gave up after %d attempts)", ErrNotAcquired, key, w.attempts))
		}
		w.emit(Event{Kind: EventRetrying, Op: w.op(), Key: key, Duration: wait, Attempts: w.attempts, Err: w.lastErr})
		if err := w.sleep(wait); err != nil {
			return nil, w.ended(err)
		}
	}
}

// attempt makes one attempt and returns its result and send time. A failed
// attempt whose outcome is unknown is cleaned up in the background; a waiter
// that reached the backend before rides out a passing failure (a server
// restart, a stale pooled connection) on its backoff, with a new token. The
// error is final.
func (w *waiter) attempt() (driver.Result, time.Time, error) {
	c := w.c
	if err := c.awaitCleaning(w.ctx, w.req.Key, w.req.Token); err != nil {
		// Only a token given with WithToken can meet a release of its own
		// earlier attempt still under way.
		return driver.Result{}, time.Time{}, err
	}
	sent := time.Now()
	var res driver.Result
	var err error
	if w.share != nil {
		res, err = c.sharer.AcquireShared(w.ctx, driver.SharedRequest{Request: w.req, Limit: w.share.limit})
	} else {
		res, err = c.d.Acquire(w.ctx, w.req)
	}
	if err == nil {
		w.lastErr = nil
		w.writer = w.writer || res.WriterWaiting
		return res, sent, nil
	}
	// The request may have been granted all the same.
	c.cleanUnknown(w.req.Key, w.req.Token, err)
	if w.try || w.attempts == 1 || !transient(w.ctx, err) || errors.Is(err, ErrLimitMismatch) {
		return driver.Result{}, sent, ctxErr(w.ctx, err)
	}
	// The next attempt must not share a token with the release just
	// started (a given token waits for it instead).
	c.log.Warn("dlock: attempt failed while waiting; retrying", "key", w.req.Key, "attempts", w.attempts, "duration", time.Since(w.start).Round(time.Microsecond), "err", err)
	w.lastErr = err
	return driver.Result{}, sent, w.renewToken()
}

// watch subscribes the client to the key's releases after the first
// attempt that met contention; one subscription per client and key, kept by
// the key's turn for every local waiter after this one. It reports whether
// to try again at once: the key may have been released between the attempt
// and the subscription.
func (w *waiter) watch(res driver.Result) (retryNow bool) {
	kt, c := w.turn, w.c
	if kt.watch != nil || c.notifier == nil {
		return false
	}
	ch, stop, err := c.notifier.WatchReleases(w.ctx, w.req.Key)
	if err != nil {
		c.log.Warn("dlock: release notifications unavailable; polling", "key", w.req.Key, "err", err)
		return false
	}
	kt.watch, kt.stopWatch = ch, stop
	// A queued attempt was made under a subscription already up, whose
	// announcements reach this watch (driver.Queued).
	return res.Queued.Wait == 0
}

// nextWait is how long to wait before the next attempt, or false when the
// retry strategy gives up.
func (w *waiter) nextWait(res driver.Result) (time.Duration, bool) {
	wait := w.cfg.retry.NextBackoff(w.attempts)
	if wait < 0 {
		return 0, false
	}
	if res.Queued.Wait > 0 && w.turn.watch != nil {
		// Queued on the server: the release names this client. Wait up
		// to Queued.Wait instead of the backoff, longer or shorter: a
		// wake-up that got lost then costs Queued.Wait, not a long
		// backoff or the holder's whole TTL.
		wait = res.Queued.Wait
	}
	// (Compared without adding to HolderTTL, which a driver may report as
	// large as a time.Duration goes.)
	if res.HolderTTL > 0 && res.HolderTTL < wait-time.Millisecond {
		wait = res.HolderTTL + time.Millisecond
	}
	return wait, true
}

// sleep waits d, or less when a release notification or a release by this
// client comes first. It returns an error when ctx ends or the client
// closes.
func (w *waiter) sleep(d time.Duration) error {
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-w.ctx.Done():
		err := w.ctx.Err()
		if w.lastErr != nil {
			err = fmt.Errorf("%w (last attempt: %w)", err, w.lastErr)
		}
		return err
	case <-w.c.closeCtx.Done():
		return ErrClosed
	case <-w.turn.watch:
		w.emit(Event{Kind: EventNotified, Op: w.op(), Key: w.req.Key, Attempts: w.attempts})
	case <-w.turn.wake:
		w.emit(Event{Kind: EventNotified, Op: w.op(), Key: w.req.Key, Attempts: w.attempts})
	case <-w.timer.C:
	}
	return nil
}

// ended emits EventWaited for a wait that ended without a lock (when it
// waited at all) and returns err.
func (w *waiter) ended(err error) error {
	w.dropWriter()
	w.endWait(err)
	return err
}

// queued waits for the key in the driver's server-side queue (a shared
// entry for a shared wait); Close ends the wait with ErrClosed.
func (w *waiter) queued() (*Lock, error) {
	c, ctx := w.c, w.ctx
	w.attempts = 1
	// The backend's queue call does not say whether it waited: the whole
	// call counts as a wait.
	w.beginWait()
	// Close wakes queued waiters too, whatever the driver does on Close.
	qctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.closeCtx, func() { cancel(ErrClosed) })
	defer stop()
	var res driver.Result
	var err error
	if w.share != nil {
		res, err = c.shareQueuer.AcquireSharedQueued(qctx, driver.SharedRequest{Request: w.req, Limit: w.share.limit})
	} else {
		res, err = c.queuer.AcquireQueued(qctx, w.req)
	}
	if err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(qctx), ErrClosed) {
			err = ErrClosed
		}
		return nil, w.ended(ctxErr(ctx, err))
	}
	if !res.Acquired || res.ValidUntil.IsZero() {
		return nil, fmt.Errorf("dlock: driver broke the Queuer contract for %q (no grant or no validity)", w.req.Key)
	}
	l := w.grant(res, w.start)
	if l == nil {
		return nil, fmt.Errorf("%w: %q was granted after its validity ran out", ErrNotAcquired, w.req.Key)
	}
	return l, nil
}

// renewToken gives the next attempt a fresh token, unless the caller gave
// one with WithToken: a release of the previous attempt's token may still be
// on its way, and must not meet the next attempt.
func (w *waiter) renewToken() error {
	if w.cfg.tokenGiven {
		return nil
	}
	w.dropWriter()
	t, err := w.c.newToken()
	if err != nil {
		return err
	}
	w.req.Token, w.cfg.token = t, t
	return nil
}

// errWriterGaveUp is why the record of a waiting writer is released.
var errWriterGaveUp = errors.New("the waiting writer stopped waiting")

// dropWriter releases, in the background, the record of the waiter's token
// as a waiting writer (driver.SharedLocker), if an attempt made one: the
// waiter stops waiting with this token, and readers must not wait for it.
func (w *waiter) dropWriter() {
	if w.writer {
		w.writer = false
		w.c.cleanUnknown(w.req.Key, w.req.Token, errWriterGaveUp)
	}
}

// keyTurn orders the waiters of one client on one key. Only the waiter that
// holds the turn makes attempts at the backend; the others queue behind it
// in arrival order (Go wakes blocked channel senders first in, first out).
// So a hot key contended by many goroutines of one service costs the backend
// one contender per client, not one per goroutine, and a release by this
// client wakes the next local waiter directly, without a round trip.
type keyTurn struct {
	sem  chan struct{} // holds a value while some waiter has the turn
	wake chan struct{} // a release by this client, for the turn holder
	refs int           // waiters queued or holding the turn; guarded by Client.mu

	// The release subscription, made by the first turn holder that met
	// contention and kept until the last waiter leaves. Only the turn
	// holder reads or sets these; a nil watch never fires.
	watch     <-chan struct{}
	stopWatch func()
}

// takeTurn blocks until the waiter is the client's only active waiter on
// its key, or ctx ends, or the client closes; the returned function gives the
// turn up. A waiter that had to queue comes after a local waiter that got
// the key: while this client still holds it an attempt is bound to fail, so
// takeTurn also waits for that release (or the strategy's first backoff).
func (w *waiter) takeTurn() (giveUp func(), err error) {
	c, key := w.c, w.req.Key
	c.mu.Lock()
	kt := c.turns[key]
	if kt == nil {
		kt = &keyTurn{sem: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
		c.turns[key] = kt
	}
	kt.refs++
	c.mu.Unlock()
	leave := func() {
		c.mu.Lock()
		if kt.refs--; kt.refs == 0 {
			delete(c.turns, key)
			if kt.stopWatch != nil {
				kt.stopWatch()
			}
		}
		c.mu.Unlock()
	}
	giveUp = func() { <-kt.sem; leave() }
	select {
	case kt.sem <- struct{}{}:
		w.turn = kt
		return giveUp, nil
	default:
	}
	// Another call of this client has the turn: wait for it.
	w.beginWait()
	select {
	case kt.sem <- struct{}{}:
		// A wake meant for an earlier turn holder is stale now.
		select {
		case <-kt.wake:
		default:
		}
	case <-w.ctx.Done():
		leave()
		return nil, w.ctx.Err()
	case <-c.closeCtx.Done():
		leave()
		return nil, ErrClosed
	}
	if backoff := w.cfg.retry.NextBackoff(1); backoff >= 0 && w.share == nil && c.holdsKey(key) {
		w.beginWait()
		t := time.NewTimer(backoff)
		defer t.Stop()
		select {
		case <-kt.wake:
		case <-t.C:
		case <-w.ctx.Done():
			giveUp()
			return nil, w.ctx.Err()
		case <-c.closeCtx.Done():
			giveUp()
			return nil, ErrClosed
		}
	}
	w.turn = kt
	return giveUp, nil
}

// transient reports whether err, met while waiting, may pass: anything but
// the end of ctx, invalid input and a closed client.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	for _, permanent := range []error{ErrInvalidKey, ErrInvalidTTL, ErrInvalidOption, ErrClosed, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	return true
}

// ctxErr makes sure an error caused by the end of ctx matches ctx.Err(). A
// deadline that has passed counts even before ctx.Err() says so: a driver
// whose socket deadline is ctx's may fail with a timeout a moment earlier.
func ctxErr(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(dl) {
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
