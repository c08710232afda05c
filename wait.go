package dlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// acquire is TryLock (try) and Lock: it validates key and opts, then makes
// one attempt, or, for Lock, hands the wait to the driver's Queuer when there
// is one and otherwise waits for the client's turn on key and retries on the
// retry strategy's backoff (woken early by a release notification or a local
// release) until the key is granted, the strategy gives up, ctx ends or the
// client closes.
func (c *Client) acquire(ctx context.Context, key string, opts []LockOption, try bool) (*Lock, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if c.isClosed() {
		return nil, ErrClosed
	}
	cfg, err := c.lockConfig(opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req := driver.Request{Key: key, Token: cfg.token, TTL: cfg.ttl, Metadata: cfg.metadata,
		Hints: driver.Hints{AutoRefresh: cfg.autoRefresh, Wait: !try && cfg.retry.NextBackoff(1) >= 0}}
	start := time.Now()
	if !try && c.queuer != nil && cfg.retry.NextBackoff(1) >= 0 {
		return c.acquireQueued(ctx, req, cfg, start)
	}

	var (
		kt     *keyTurn
		waited time.Duration
	)
	if !try {
		var giveUp func()
		kt, giveUp, waited, err = c.waitTurn(ctx, key, cfg.retry, start)
		if err != nil {
			return nil, c.waitEnded(key, 0, time.Since(start), err)
		}
		defer giveUp()
	}

	var (
		lastErr error
		timer   *time.Timer
	)
	for attempt := 1; ; attempt++ {
		if err := c.awaitCleaning(ctx, key, req.Token); err != nil {
			// Only a token given with WithToken can meet a release of
			// its own earlier attempt still under way.
			return nil, c.waitEnded(key, attempt, waited, err)
		}
		sent := time.Now()
		res, err := c.d.Acquire(ctx, req)
		if err != nil {
			// The request may have been granted all the same.
			c.cleanUnknown(key, req.Token, err)
			if try || attempt == 1 || !transient(ctx, err) {
				return nil, c.waitEnded(key, attempt, waited, ctxErr(ctx, err))
			}
			// A waiter that reached the backend before rides out a
			// passing failure (a server restart, a stale pooled
			// connection) on its backoff, until its ctx ends. Its next
			// attempt must not share a token with the release just
			// started (a given token waits for it instead).
			c.log.Warn("dlock: attempt failed while waiting; retrying", "key", key, "err", err)
			lastErr, res = err, driver.Result{}
			if err := c.renewToken(&req, &cfg); err != nil {
				return nil, err
			}
		} else {
			lastErr = nil
		}
		if res.Acquired {
			if l := c.grant(req, cfg, res, sent, start, attempt, waited); l != nil {
				return l, nil
			}
			// The reply came after the validity deadline (not a grant), or
			// the client was closed meanwhile.
			if c.isClosed() {
				return nil, ErrClosed
			}
			// The late grant's release may still be on its way (to some
			// nodes of a quorum).
			if err := c.renewToken(&req, &cfg); err != nil {
				return nil, err
			}
		}
		if try {
			return nil, fmt.Errorf("%w: %q is held by another owner", ErrNotAcquired, key)
		}
		if kt.watch == nil && c.notifier != nil {
			// One subscription per client and key, kept by the key's turn
			// for every local waiter after this one.
			ch, stop, err := c.notifier.WatchReleases(ctx, key)
			if err == nil {
				kt.watch, kt.stopWatch = ch, stop
				if res.Queued.Wait == 0 {
					// The key may have been released between the
					// attempt and the subscription: try again at once.
					// (A queued attempt was made under a subscription
					// already up, whose announcements reach this watch.)
					continue
				}
			} else {
				c.log.Warn("dlock: release notifications unavailable; polling", "key", key, "err", err)
			}
		}
		backoff := cfg.retry.NextBackoff(attempt)
		if backoff < 0 {
			return nil, c.waitEnded(key, attempt, waited, fmt.Errorf("%w: %q is held by another owner (gave up after %d attempts)", ErrNotAcquired, key, attempt))
		}
		if res.Queued.Wait > 0 && kt.watch != nil {
			// Queued on the server: the release names this client. Wait
			// up to Queued.Wait instead of the backoff, longer or shorter:
			// a wake-up that got lost then costs Queued.Wait, not a long
			// backoff or the holder's whole TTL.
			backoff = res.Queued.Wait
		}
		// (Compared without adding to HolderTTL, which a driver may
		// report as large as a time.Duration goes.)
		if res.HolderTTL > 0 && res.HolderTTL < backoff-time.Millisecond {
			backoff = res.HolderTTL + time.Millisecond
		}
		if timer == nil {
			timer = time.NewTimer(backoff)
			defer timer.Stop()
		} else {
			timer.Reset(backoff)
		}
		t0 := time.Now()
		select {
		case <-ctx.Done():
			err := ctx.Err()
			if lastErr != nil {
				err = fmt.Errorf("%w (last attempt: %w)", err, lastErr)
			}
			return nil, c.waitEnded(key, attempt, waited+time.Since(t0), err)
		case <-c.closeCtx.Done():
			return nil, c.waitEnded(key, attempt, waited+time.Since(t0), ErrClosed)
		case <-kt.watch:
		case <-kt.wake:
		case <-timer.C:
		}
		waited += time.Since(t0)
	}
}

// waitEnded emits EventWaited for a wait on key that ended without a lock
// (when it waited at all) and returns err.
func (c *Client) waitEnded(key string, attempts int, waited time.Duration, err error) error {
	if waited > 0 {
		c.emit(Event{Kind: EventWaited, Key: key, Duration: waited, Attempts: attempts, Err: err})
	}
	return err
}

// acquireQueued waits for key in the driver's server-side queue; Close
// ends the wait with ErrClosed.
func (c *Client) acquireQueued(ctx context.Context, req driver.Request, cfg lockConfig, start time.Time) (*Lock, error) {
	// Close wakes queued waiters too, whatever the driver does on Close.
	qctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.closeCtx, func() { cancel(ErrClosed) })
	defer stop()
	res, err := c.queuer.AcquireQueued(qctx, req)
	if err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(qctx), ErrClosed) {
			err = ErrClosed
		}
		return nil, c.waitEnded(req.Key, 1, time.Since(start), ctxErr(ctx, err))
	}
	if !res.Acquired || res.ValidUntil.IsZero() {
		return nil, fmt.Errorf("dlock: driver broke the Queuer contract for %q (no grant or no validity)", req.Key)
	}
	l := c.grant(req, cfg, res, start, start, 1, time.Since(start))
	if l == nil {
		return nil, fmt.Errorf("%w: %q was granted after its validity ran out", ErrNotAcquired, req.Key)
	}
	return l, nil
}

// renewToken gives the next attempt of req a fresh token, unless the caller
// gave one with WithToken: a release of the previous attempt's token may
// still be on its way, and must not meet the next attempt.
func (c *Client) renewToken(req *driver.Request, cfg *lockConfig) error {
	if cfg.tokenGiven {
		return nil
	}
	t, err := c.newToken()
	if err != nil {
		return err
	}
	req.Token, cfg.token = t, t
	return nil
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
