package dlock

import (
	"context"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// grant builds a held Lock from a successful attempt, or releases the key and
// returns nil when the reply came after the validity deadline.
func (c *Client) grant(req driver.Request, cfg lockConfig, res driver.Result, sent, start time.Time, attempts int, waited time.Duration) *Lock {
	deadline := driver.ValidUntil(sent, cfg.ttl)
	if !res.ValidUntil.IsZero() {
		deadline = res.ValidUntil
	}
	now := time.Now()
	if !now.Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout(cfg.ttl))
		_ = c.d.Release(ctx, req.Key, req.Token)
		cancel()
		c.log.Warn("dlock: grant arrived after its validity deadline; released", "key", req.Key)
		return nil
	}
	l := &Lock{
		c:           c,
		key:         req.Key,
		token:       req.Token,
		fence:       res.Fence,
		ttl:         cfg.ttl,
		autoRefresh: cfg.autoRefresh,
		acquiredAt:  now,
		deadline:    deadline,
		lastSent:    sent,
		done:        make(chan struct{}),
		stop:        make(chan struct{}),
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout(cfg.ttl))
		_ = c.d.Release(ctx, req.Key, req.Token)
		cancel()
		return nil
	}
	c.held[l] = struct{}{}
	c.heldKeys[l.key]++
	c.mu.Unlock()
	l.start()
	if waited > 0 {
		c.emit(Event{Kind: EventWaited, Key: req.Key, Duration: waited, Attempts: attempts})
	}
	c.log.Debug("dlock: acquired", "key", req.Key, "fence", res.Fence, "attempts", attempts)
	c.emit(Event{Kind: EventAcquired, Key: req.Key, Fence: res.Fence, Duration: time.Since(start), Attempts: attempts})
	return l
}

// forget drops l from the client's held locks; a lock already dropped is
// left alone.
func (c *Client) forget(l *Lock) {
	c.mu.Lock()
	if _, ok := c.held[l]; ok {
		delete(c.held, l)
		if c.heldKeys[l.key]--; c.heldKeys[l.key] <= 0 {
			delete(c.heldKeys, l.key)
		}
	}
	c.mu.Unlock()
}

// holdsKey reports whether one of the client's own locks holds key.
func (c *Client) holdsKey(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heldKeys[key] > 0
}
