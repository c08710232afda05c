package dlock

import (
	"context"
	"errors"
	"time"
)

// An acquire attempt whose reply never came — ctx ended while the request
// was in flight, a connection reset, a timeout — may still have been
// granted: the server can receive, or commit, the request after the client
// gave up. Nobody would then hold that grant, and the key would stay taken
// for the whole TTL. So the client releases the attempt's token in the
// background. The release is owner-checked (driver.Release with that exact
// token), so it can only ever free that attempt's own grant.
//
// One release is not enough: the cancelled request can reach the server, or
// commit, after a first release on another connection already ran (pgx
// cancels the query; go-redis drops the connection but Redis already has
// the bytes). So the release is repeated on a short schedule until one
// returns nil (it freed the grant) or the schedule ends, which bounds the
// life of a ghost grant to about a second.

// cleanupSchedule is when the releases of an unknown outcome are sent,
// measured from the moment the attempt returned.
var cleanupSchedule = []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond}

// cleanupWindow bounds a whole run of the schedule, from the attempt's
// return; each release also stops at cleanupRelease. Client.Close waits for
// running cleanups no longer than cleanupWindow.
const (
	cleanupWindow  = 2 * time.Second
	cleanupRelease = 500 * time.Millisecond
)

// outcomeKnown reports whether an Acquire that returned err certainly took
// nothing: the driver refused the input, or was closed.
func outcomeKnown(err error) bool {
	for _, refused := range []error{ErrInvalidKey, ErrInvalidTTL, ErrInvalidOption, ErrClosed} {
		if errors.Is(err, refused) {
			return true
		}
	}
	return false
}

type tokenKey struct{ key, token string }

// cleanup is one background release of a token's possible grant.
type cleanup struct {
	done chan struct{} // closed when it is over
	// again, set by another unknown outcome of the same token while this
	// one runs (a token given with WithToken to concurrent calls), makes
	// it run its schedule once more, from then.
	again   bool
	againAt time.Time
}

// cleanUnknown starts the background release of token's possible grant of
// key, unless the attempt's error err says nothing was taken. It never
// blocks.
func (c *Client) cleanUnknown(key, token string, err error) {
	if outcomeKnown(err) {
		return
	}
	tk := tokenKey{key, token}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.driverClosing {
		return
	}
	if cl, ok := c.cleaning[tk]; ok {
		cl.again, cl.againAt = true, now
		return
	}
	cl := &cleanup{done: make(chan struct{})}
	c.cleaning[tk] = cl
	c.log.Debug("dlock: attempt's outcome unknown, or a lease outlived its Lock; releasing it in the background", "key", key, "why", err)
	go func() {
		start := now
		for {
			c.releaseUnknown(tk, start)
			c.mu.Lock()
			if !cl.again {
				delete(c.cleaning, tk)
				c.mu.Unlock()
				close(cl.done)
				return
			}
			cl.again, start = false, cl.againAt
			c.mu.Unlock()
		}
	}()
}

// releaseUnknown runs the release schedule for tk from start.
func (c *Client) releaseUnknown(tk tokenKey, start time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(cleanupWindow))
	defer cancel()
	var timer *time.Timer
	for i, at := range cleanupSchedule {
		if wait := time.Until(start.Add(at)); wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
				defer timer.Stop()
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if c.holdsToken(tk) {
			// One of this client's own locks holds the key with this
			// token (WithToken reuse): the lease is that lock's now, and
			// its Unlock frees it.
			c.log.Debug("dlock: unknown outcome's token is held by a lock of this client; left to it", "key", tk.key)
			return
		}
		rctx, rcancel := context.WithTimeout(ctx, cleanupRelease)
		err := c.d.Release(rctx, tk.key, tk.token)
		rcancel()
		if err == nil {
			c.log.Debug("dlock: released a grant whose reply was lost", "key", tk.key, "release", i+1, "after", time.Since(start).Round(time.Millisecond))
			return
		}
		if errors.Is(err, ErrClosed) {
			return
		}
		if !errors.Is(err, ErrNotHeld) && c.closing() {
			// The backend does not answer and the client is closing:
			// the process may be about to exit. A grant, if any, lapses
			// at its TTL.
			c.log.Debug("dlock: unknown outcome left to its TTL: backend not answering at Close", "key", tk.key, "err", err)
			return
		}
	}
	c.log.Debug("dlock: unknown outcome settled: no grant found to release", "key", tk.key)
}

// holdsToken reports whether one of the client's locks holds tk.key with
// tk.token.
func (c *Client) holdsToken(tk tokenKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.heldKeys[tk.key] == 0 {
		return false
	}
	for l := range c.held {
		if l.key == tk.key && l.token == tk.token {
			return true
		}
	}
	return false
}

// awaitCleaning waits, bounded by ctx, for a cleanup of key and token under
// way: an attempt with that token must not race a release of it.
func (c *Client) awaitCleaning(ctx context.Context, key, token string) error {
	c.mu.Lock()
	cl := c.cleaning[tokenKey{key, token}]
	c.mu.Unlock()
	if cl == nil {
		return nil
	}
	select {
	case <-cl.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closeCtx.Done():
		return ErrClosed
	}
}

func (c *Client) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.driverClosing
}

// waitCleanups waits for the cleanups under way, at most until deadline,
// and lets no new one start.
func (c *Client) waitCleanups(deadline time.Time) {
	c.mu.Lock()
	c.driverClosing = true
	pending := make([]chan struct{}, 0, len(c.cleaning))
	for _, cl := range c.cleaning {
		pending = append(pending, cl.done)
	}
	c.mu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for _, done := range pending {
		select {
		case <-done:
		case <-t.C:
			return
		}
	}
}
