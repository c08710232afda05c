package redisengine

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
)

var (
	//go:embed lua/acquire.lua
	acquireLua string
	//go:embed lua/refresh.lua
	refreshLua string
	//go:embed lua/release.lua
	releaseLua string
	//go:embed lua/inspect.lua
	inspectLua string
	//go:embed lua/fence.lua
	fenceLua string
	//go:embed lua/leave.lua
	leaveLua string
	//go:embed lua/stay.lua
	stayLua string
	//go:embed lua/force.lua
	forceLua string
	//go:embed lua/share.lua
	shareLua string
	//go:embed lua/holders.lua
	holdersLua string
	// queueLua defines the queue helpers of the scripts it is put before.
	//go:embed lua/queue.lua
	queueLua string
	// grantsLua defines the fence and shared-grant helpers of the scripts
	// it is put before (after queueLua).
	//go:embed lua/grants.lua
	grantsLua string

	helpers       = queueLua + grantsLua
	acquireScript = redis.NewScript(helpers + acquireLua)
	refreshScript = redis.NewScript(helpers + refreshLua)
	releaseScript = redis.NewScript(helpers + releaseLua)
	inspectScript = redis.NewScript(helpers + inspectLua)
	fenceScript   = redis.NewScript(helpers + fenceLua)
	leaveScript   = redis.NewScript(leaveLua)
	stayScript    = redis.NewScript(queueLua + stayLua)
	forceScript   = redis.NewScript(helpers + forceLua)
	shareScript   = redis.NewScript(helpers + shareLua)
	holdersScript = redis.NewScript(helpers + holdersLua)
)

// pttl converts a PTTL in milliseconds from the server to a duration; a
// key set by another client with an expiry beyond MaxTTL (which no
// time.Duration may be able to hold) counts as MaxTTL.
func pttl(ms int64) time.Duration {
	if ms <= 0 {
		return 0
	}
	if ms >= MaxTTL.Milliseconds() {
		return MaxTTL
	}
	return time.Duration(ms) * time.Millisecond
}

// millis rounds d up to whole milliseconds, so the server-side lease is at
// least d.
func millis(d time.Duration) int64 {
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// Acquire implements driver.Locker with one script call: SET NX PX, the
// fence bump and the info write on success; the holder's PTTL otherwise.
// It is refused while the key has live shared grants (see AcquireShared),
// and then, with Hints.Wait, records the token as a waiting writer for
// the TTL (Result.WriterWaiting).
// The TTL must be within [MinTTL, MaxTTL] (the portable layer checks it).
func (e *Engine) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	return e.acquire(ctx, req, 0)
}

// acquire makes one attempt; a non-zero attempt makes it a counted attempt
// (see AcquireCounted).
func (e *Engine) acquire(ctx context.Context, req driver.Request, attempt uint64) (driver.Result, error) {
	args := []any{req.Token, millis(req.TTL), req.Metadata, e.fenceTTLms}
	if attempt != 0 {
		args = append(args, "counted", strconv.FormatUint(attempt, 10))
	}
	// The queue: a client waiting for the key (it watches the key's
	// releases) joins it when this attempt fails; an uncounted attempt
	// finds a free key kept for the first waiter.
	keys := e.ks.allKeys(req.Key)
	qa := e.notify.attempt(e.ks.channel(req.Key), req.Hints.Wait)
	writer := "0"
	if req.Hints.Wait {
		writer = "1"
	}
	args = append(args, e.id, qa.joins(), queueEntryTTLms, writer)
	var abandoned func(any, error)
	if attempt == 0 {
		// (The caller of a counted attempt gives it back itself, by
		// attempt number.)
		abandoned = e.giveBack(req.Key, req.Token, parseAcquire)
	}
	return e.runAttempt(ctx, acquireScript, keys, args, qa, abandoned, parseAcquire)
}

// giveBack returns the function that runs when the caller of an attempt
// on key for token left before its reply (see run): if the attempt was
// granted, or may have been, it gives the grant back, so that nothing is
// left behind. parse reads the reply.
func (e *Engine) giveBack(key, token string, parse func(any) (driver.Result, error)) func(any, error) {
	return func(v any, err error) {
		if res, perr := parse(v); err == nil && (perr != nil || !res.Acquired) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = e.Release(ctx, key, token)
	}
}

// runAttempt runs an acquisition script whose attempt qa may join the
// key's queue (qa is zero when it does not), parses the reply with parse,
// and records whether the client is in the queue after it (see
// notifier.setQueued): a refused attempt whose caller may rely on being
// woken gets Queued.Wait. A failed call, or a reply that cannot be read,
// may have joined the queue; an error matching ErrLimitMismatch is
// returned as is, a refusal that joined nothing.
func (e *Engine) runAttempt(ctx context.Context, s *redis.Script, keys []string, args []any, qa queueAttempt,
	abandoned func(any, error), parse func(any) (driver.Result, error)) (driver.Result, error) {
	var replied func()
	if qa.w != nil {
		replied = func() { e.notify.replied(qa) }
	}
	v, err := e.runTracked(ctx, s, keys, args, abandoned, replied)
	var res driver.Result
	if err == nil {
		res, err = parse(v)
		if err != nil && !errors.Is(err, driver.ErrLimitMismatch) {
			err = e.unavailable(ctx, err)
		}
	}
	switch {
	case errors.Is(err, driver.ErrLimitMismatch):
		if qa.w != nil {
			e.notify.setQueued(qa, false, false)
		}
		return driver.Result{}, err
	case err != nil:
		if qa.w != nil {
			// The attempt may have joined the queue.
			e.notify.setQueued(qa, true, true)
		}
		return driver.Result{}, err
	}
	if qa.w != nil && e.notify.setQueued(qa, !res.Acquired, false) {
		res.Queued.Wait = queueKeepEvery
	}
	return res, nil
}

func parseAcquire(v any) (driver.Result, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 2 && len(a) != 3 {
		return driver.Result{}, fmt.Errorf("unexpected acquire reply %v", v)
	}
	granted, ok := a[0].(int64)
	if !ok {
		return driver.Result{}, fmt.Errorf("unexpected acquire reply %v", v)
	}
	if granted == 1 {
		s, ok := a[1].(string)
		fence, err := strconv.ParseUint(s, 10, 64)
		if !ok || err != nil || fence == 0 {
			return driver.Result{}, fmt.Errorf("unexpected fence %v in acquire reply", a[1])
		}
		return driver.Result{Acquired: true, Fence: fence}, nil
	}
	ms, _ := a[1].(int64)
	res := driver.Result{HolderTTL: pttl(ms)}
	if len(a) == 3 {
		w, _ := a[2].(int64)
		res.WriterWaiting = w == 1
	}
	return res, nil
}

// Refresh implements driver.Locker, for the lock and shared grants alike.
func (e *Engine) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	_, err := e.RefreshGrant(ctx, key, token, ttl)
	return err
}

// RefreshGrant is Refresh that also reports what it refreshed: the limit
// stored with the key's shared grants when token has one of them (0: no
// limit), or -1 when token holds the lock.
func (e *Engine) RefreshGrant(ctx context.Context, key, token string, ttl time.Duration) (limit int, err error) {
	v, err := e.run(ctx, refreshScript, e.ks.refreshKeys(key), []any{token, millis(ttl)}, nil)
	if err != nil {
		return 0, err
	}
	limit, ok := refreshed(v)
	if !ok {
		return 0, fmt.Errorf("%w: %q", driver.ErrNotHeld, key)
	}
	return limit, nil
}

// refreshed reads the reply of refresh.lua: whether it refreshed a grant,
// and the limit of a shared one (-1 for the lock).
func refreshed(v any) (limit int, ok bool) {
	switch n, _ := v.(int64); {
	case n == 1:
		return -1, true
	case n >= 2:
		return int(n - 2), true
	}
	return 0, false
}

// Release implements driver.Locker, for the lock and shared grants alike.
// On success it publishes a wake-up on the key's release channel, in the
// same script. It also removes the token's record as a waiting writer
// (still returning an error wrapping ErrNotHeld when the token held no
// grant), announcing that too.
func (e *Engine) Release(ctx context.Context, key, token string) error {
	return e.release(ctx, key, token, e.ks.channel(key), 0)
}

// release frees key if token owns it (and, when attempt is not zero, took
// it in that counted attempt) and, unless channel is empty, publishes a
// wake-up on channel.
func (e *Engine) release(ctx context.Context, key, token, channel string, attempt uint64) error {
	keys := pick(e.ks.allKeys(key), kLock, kInfo, kQueue, kWaits, kShares, kSInfo, kSLimit, kWriters)
	args := []any{token, channel, ""}
	if attempt != 0 {
		args[2] = strconv.FormatUint(attempt, 10)
	}
	v, err := e.run(ctx, releaseScript, keys, args, nil)
	if err != nil {
		return err
	}
	if n, _ := v.(int64); n != 1 {
		return fmt.Errorf("%w: %q", driver.ErrNotHeld, key)
	}
	return nil
}

// Inspect implements driver.Locker. For a key held by a client other than
// dlock (a plain SET NX), it reports Held with fence 0 and no metadata.
func (e *Engine) Inspect(ctx context.Context, key string) (driver.Info, error) {
	in, _, err := e.InspectHolder(ctx, key)
	return in, err
}

// InspectHolder is Inspect that also returns the value of the lock key: the
// holder's owner token ("" when the key is free or holds something other
// than a string).
func (e *Engine) InspectHolder(ctx context.Context, key string) (driver.Info, string, error) {
	in, token, _, err := e.InspectGrant(ctx, key)
	return in, token, err
}

// InspectGrant is InspectHolder that also reports whether the holder's
// fence was recorded by RaiseFence (a Redlock grant's second round) rather
// than chosen by this node alone.
func (e *Engine) InspectGrant(ctx context.Context, key string) (in driver.Info, token string, recorded bool, err error) {
	v, err := e.run(ctx, inspectScript, e.ks.inspectKeys(key), nil, nil)
	if err != nil {
		return driver.Info{}, "", false, err
	}
	in, token, state, err := parseInspect(v)
	if err != nil {
		return driver.Info{}, "", false, e.unavailable(ctx, err)
	}
	in.Held = state == 1
	if a, _ := v.([]any); len(a) == 7 {
		recorded = a[6] == "1"
	}
	return in, token, recorded, nil
}

// parseInspect reads the reply of inspect.lua or force.lua: the state (the
// first element), and the Info (Held left false) and holder's token of the
// rest.
func parseInspect(v any) (in driver.Info, token string, state int64, err error) {
	a, ok := v.([]any)
	if !ok || len(a) < 6 || len(a) > 7 {
		return driver.Info{}, "", 0, fmt.Errorf("unexpected inspect reply %v", v)
	}
	state, _ = a[0].(int64)
	ms, _ := a[1].(int64)
	fs, _ := a[2].(string)
	meta, _ := a[3].(string)
	token, _ = a[4].(string)
	waiting, _ := a[5].(int64)
	in = driver.Info{Metadata: meta, Waiters: int(waiting), TTL: pttl(ms)}
	in.Fence, _ = strconv.ParseUint(fs, 10, 64)
	return in, token, state, nil
}
