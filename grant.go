package dlock

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// grant builds a held Lock from a successful attempt sent at sent, or
// releases the key and returns nil when the reply came after the validity
// deadline or the client was closed meanwhile.
func (w *waiter) grant(res driver.Result, sent time.Time) *Lock {
	c, req := w.c, w.req
	deadline := driver.ValidUntil(sent, w.cfg.ttl)
	if !res.ValidUntil.IsZero() {
		deadline = res.ValidUntil
	}
	now := time.Now()
	if !now.Before(deadline) {
		// A release that fails goes on in the background, on the schedule
		// of an unknown outcome: the link that brought the reply late may
		// hold back the release too, and a key left behind would stay held
		// for its TTL, or as long as a lease it shares lives (etcd).
		if err := c.releaseNow(req.Key, req.Token, w.cfg.ttl); err != nil && !errors.Is(err, ErrNotHeld) {
			c.cleanUnknown(req.Key, req.Token, err)
		}
		c.log.Warn("dlock: grant arrived after its validity deadline; released", "key", req.Key, "fence", res.Fence, "duration", time.Since(w.start).Round(time.Microsecond))
		return nil
	}
	l := &Lock{
		h:           c,
		key:         req.Key,
		token:       req.Token,
		fence:       res.Fence,
		ttl:         w.cfg.ttl,
		autoRefresh: w.cfg.autoRefresh,
		acquiredAt:  now,
		deadline:    deadline,
		lastSent:    sent,
		done:        make(chan struct{}),
		stop:        make(chan struct{}),
		minHold:     w.cfg.minHold,
		minTTL:      c.caps.MinTTL,
		op:          w.op(),
	}
	if w.cfg.maxHold > 0 {
		l.holdUntil = now.Add(w.cfg.maxHold)
	}
	if w.share != nil {
		l.keeper = c.keeper
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = c.releaseNow(req.Key, req.Token, w.cfg.ttl)
		return nil
	}
	c.held[l] = struct{}{}
	c.heldKeys[l.key]++
	c.mu.Unlock()
	l.start()
	w.endWait(nil)
	c.log.Debug("dlock: acquired", "key", req.Key, "fence", res.Fence, "attempts", w.attempts, "duration", time.Since(w.start).Round(time.Microsecond))
	w.emit(Event{Kind: EventAcquired, Op: l.op, Key: req.Key, Fence: res.Fence, Duration: time.Since(w.start), Attempts: w.attempts})
	return l
}

// releaseNow releases a grant that is not turned into a Lock, bounded by
// its TTL.
func (c *Client) releaseNow(key, token string, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout(ttl))
	defer cancel()
	return c.d.Release(ctx, key, token)
}

func (c *Client) releaseBehind(key, token string, why error) { c.cleanUnknown(key, token, why) }

// The Client is the lockHost of the locks it grants.
var _ lockHost = (*Client)(nil)

func (c *Client) backend() driver.Locker { return c.d }

func (c *Client) keepRefreshed(l *Lock) bool {
	if c.batch == nil {
		return false
	}
	c.batch.add(l)
	return true
}

func (c *Client) stopRefreshing(l *Lock) {
	if c.batch != nil {
		c.batch.remove(l)
	}
}

// lockEnded drops l from the client's held locks; a lock already dropped is
// left alone.
func (c *Client) lockEnded(l *Lock) {
	c.mu.Lock()
	if _, ok := c.held[l]; ok {
		delete(c.held, l)
		if c.heldKeys[l.key]--; c.heldKeys[l.key] <= 0 {
			delete(c.heldKeys, l.key)
		}
	}
	c.mu.Unlock()
}

// keyFreed wakes this client's turn holder on key, if any, after one of the
// client's own locks on key was released or lost.
func (c *Client) keyFreed(key string) {
	c.mu.Lock()
	kt := c.turns[key]
	c.mu.Unlock()
	if kt != nil {
		select {
		case kt.wake <- struct{}{}:
		default:
		}
	}
}

func (c *Client) report(e Event, level slog.Level, msg string, attrs ...any) {
	if msg != "" {
		c.log.Log(context.Background(), level, msg, attrs...)
	}
	c.emit(e)
}

// holdsKey reports whether one of the client's own locks holds key.
func (c *Client) holdsKey(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heldKeys[key] > 0
}
