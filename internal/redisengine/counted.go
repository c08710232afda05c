package redisengine

import (
	"context"
	"fmt"
	"strconv"

	"github.com/dlock-go/dlock/driver"
)

// The methods in this file make single attempts on one Redis server for a
// driver that takes a lock on several independent servers at once (package
// redlock).

// AcquireCounted makes one acquisition attempt like Acquire, with three
// differences.
//
// A free key is not kept for the first client in the key's waiting queue
// (servers of a quorum need not agree on who is first); a waiting client
// still joins the queue when the attempt fails, so that releases name it.
//
// The fence is the key's fence counter plus one while the counter exists,
// and the server's clock in microseconds only when it does not (a new key,
// or a server that lost its data). Servers whose counters agree therefore
// grant the same fence, which lets a quorum driver skip a second round when
// a majority agrees. The counter is stored as with Acquire.
//
// The attempt number, which must be non-zero and greater than that of any
// earlier attempt with the same token, is recorded with the grant, so that
// GiveBack(attempt) frees only what this attempt took: a later attempt
// with the same token (the portable layer keeps the token across the
// attempts of one Lock call) is never freed by an earlier attempt's late
// give-back, and an earlier attempt's late request does not take over a
// later one's grant. Unlike Acquire, a reply that comes after ctx ended is
// not released in the background; the caller gives the attempt back.
func (e *Engine) AcquireCounted(ctx context.Context, req driver.Request, attempt uint64) (driver.Result, error) {
	if attempt == 0 {
		return driver.Result{}, fmt.Errorf("%w: redis counted attempt number 0", driver.ErrInvalidOption)
	}
	return e.acquire(ctx, req, attempt)
}

// GiveBack frees key if token holds it through the counted attempt of that
// number, without waking waiters (nobody waits for a partial grant). It
// returns an error wrapping driver.ErrNotHeld when it freed nothing.
func (e *Engine) GiveBack(ctx context.Context, key, token string, attempt uint64) error {
	if attempt == 0 {
		return fmt.Errorf("%w: redis counted attempt number 0", driver.ErrInvalidOption)
	}
	return e.release(ctx, key, token, "", attempt)
}

// RaiseFence sets the fence counter of key to fence unless it is already
// higher, renewing its expiry (Config.FenceTTL), and, when token holds the
// key or one of its shared grants, records fence as that grant's fence
// (what Inspect and Holders report). It reports whether token holds the
// key or a shared grant of it. One script call, one round trip.
func (e *Engine) RaiseFence(ctx context.Context, key, token string, fence uint64) (held bool, err error) {
	keys := pick(e.ks.allKeys(key), kLock, kFence, kInfo, kShares, kSInfo)
	v, err := e.run(ctx, fenceScript, keys, []any{token, strconv.FormatUint(fence, 10), e.fenceTTLms}, nil)
	if err != nil {
		return false, err
	}
	n, _ := v.(int64)
	return n == 1, nil
}
