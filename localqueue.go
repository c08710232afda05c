package dlock

import (
	"context"
	"time"
)

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

// takeTurn blocks until the caller is the client's only active waiter on key,
// or ctx ends, or the client closes. The returned function gives the turn up;
// queued reports whether the caller had to wait for the turn.
func (c *Client) takeTurn(ctx context.Context, key string) (kt *keyTurn, giveUp func(), queued bool, err error) {
	c.mu.Lock()
	kt = c.turns[key]
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
		return kt, giveUp, false, nil
	default:
	}
	select {
	case kt.sem <- struct{}{}:
		// A wake meant for an earlier turn holder is stale now.
		select {
		case <-kt.wake:
		default:
		}
		return kt, giveUp, true, nil
	case <-ctx.Done():
		leave()
		return nil, nil, true, ctx.Err()
	case <-c.closeCtx.Done():
		leave()
		return nil, nil, true, ErrClosed
	}
}

// waitTurn takes the client's turn on key for a Lock call that started at
// start, and returns how long the call has waited so far. A caller that had
// to queue comes after a local waiter that got the key: while this client
// still holds it an attempt is bound to fail, so waitTurn also waits for
// that release (or the strategy's first backoff).
func (c *Client) waitTurn(ctx context.Context, key string, retry RetryStrategy, start time.Time) (kt *keyTurn, giveUp func(), waited time.Duration, err error) {
	kt, giveUp, queued, err := c.takeTurn(ctx, key)
	if err != nil || !queued {
		return kt, giveUp, 0, err
	}
	if backoff := retry.NextBackoff(1); backoff >= 0 && c.holdsKey(key) {
		t := time.NewTimer(backoff)
		defer t.Stop()
		select {
		case <-kt.wake:
		case <-t.C:
		case <-ctx.Done():
			giveUp()
			return nil, nil, 0, ctx.Err()
		case <-c.closeCtx.Done():
			giveUp()
			return nil, nil, 0, ErrClosed
		}
	}
	return kt, giveUp, time.Since(start), nil
}

// releasedLocally wakes this client's turn holder on key, if any, after one
// of the client's own locks on key was released.
func (c *Client) releasedLocally(key string) {
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
