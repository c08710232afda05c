package redisengine

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.SharedLocker = (*Engine)(nil)

// AcquireShared implements driver.SharedLocker with one script call: it
// drops lapsed shared grants and writer records by the server's clock and,
// while the lock key does not exist, no writer record is live, no other
// client is first in the key's waiting queue (an exclusive waiter, which a
// shared grant must not overtake) and fewer than req.Limit grants are
// live, adds the token to the key's shared grants with a fence from the
// key's counter, its metadata and the limit. Grants follow the key's
// waiting queue: a waiting client joins it as a shared waiter when refused,
// and is granted only when no exclusive waiter is before it and fewer
// waiters are before it than permits are free; a release names the shared
// waiters it frees permits for, so that a release wakes one waiter per free
// permit, not every waiter (see share.lua).
func (e *Engine) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	return e.acquireShared(ctx, req, 0)
}

// AcquireSharedCounted is AcquireShared as a counted attempt (see
// AcquireCounted): the fence is the counter plus one while the counter
// exists, the attempt number is recorded with the grant for GiveBack, and
// a reply that comes after ctx ended is left to the caller to give back.
func (e *Engine) AcquireSharedCounted(ctx context.Context, req driver.SharedRequest, attempt uint64) (driver.Result, error) {
	if attempt == 0 {
		return driver.Result{}, fmt.Errorf("%w: redis counted attempt number 0", driver.ErrInvalidOption)
	}
	return e.acquireShared(ctx, req, attempt)
}

func (e *Engine) acquireShared(ctx context.Context, req driver.SharedRequest, attempt uint64) (driver.Result, error) {
	parse := func(v any) (driver.Result, error) { return parseShare(req, v) }
	keys := pick(e.ks.allKeys(req.Key), kLock, kFence, kShares, kSInfo, kSLimit, kWriters, kQueue, kWaits)
	args := []any{req.Token, millis(req.TTL), req.Metadata, e.fenceTTLms, strconv.Itoa(req.Limit), e.id, "", ""}
	var (
		qa        queueAttempt
		abandoned func(any, error)
	)
	if attempt != 0 {
		// Counted attempts never join the queue (see share.lua); their
		// caller gives them back itself, by attempt number.
		args[6], args[7] = "counted", strconv.FormatUint(attempt, 10)
	} else {
		// A client waiting for the key joins its queue as a shared
		// waiter when this attempt fails (see acquire).
		qa = e.notify.attempt(e.ks.channel(req.Key), req.Hints.Wait)
		abandoned = e.giveBack(req.Key, req.Token, parse)
	}
	args = append(args, qa.joins(), queueEntryTTLms)
	return e.runAttempt(ctx, shareScript, keys, args, qa, abandoned, parse)
}

// parseShare reads the reply of share.lua.
func parseShare(req driver.SharedRequest, v any) (driver.Result, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return driver.Result{}, fmt.Errorf("unexpected shared acquire reply %v", v)
	}
	switch state, _ := a[0].(int64); state {
	case 2:
		limit, _ := a[1].(int64)
		return driver.Result{}, fmt.Errorf("%w: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, req.Key, limit, req.Limit)
	case 0:
		ms, _ := a[1].(int64)
		return driver.Result{HolderTTL: pttl(ms)}, nil
	}
	return parseAcquire(v)
}

// Grant is one live grant of a key on one server, as Grants reports it.
type Grant struct {
	driver.Holder
	// Token is the grant's owner token.
	Token string
}

// Grants is what a key's grants look like on one server.
type Grants struct {
	// Grants are the live grants in fence order: the exclusive holder, or
	// the shared grants.
	Grants []Grant
	// Limit is the limit stored with the shared grants (0 without them).
	Limit int
	// WritersWaiting is the number of live waiting-writer records.
	WritersWaiting int
}

// Holders implements driver.SharedLocker with one script call that
// changes nothing. A key held by another library (a plain SET NX) shows
// one exclusive holder with fence 0.
func (e *Engine) Holders(ctx context.Context, key string) (driver.Holders, error) {
	g, err := e.Grants(ctx, key)
	if err != nil {
		return driver.Holders{}, err
	}
	h := driver.Holders{Limit: g.Limit, WritersWaiting: g.WritersWaiting}
	for _, x := range g.Grants {
		h.Holders = append(h.Holders, x.Holder)
	}
	return h, nil
}

// Grants is Holders with each grant's owner token, for a driver that
// combines the answers of several servers (package redlock).
func (e *Engine) Grants(ctx context.Context, key string) (Grants, error) {
	keys := pick(e.ks.allKeys(key), kLock, kInfo, kShares, kSInfo, kSLimit, kWriters)
	v, err := e.run(ctx, holdersScript, keys, nil, nil)
	if err != nil {
		return Grants{}, err
	}
	g, err := parseHolders(v)
	if err != nil {
		return Grants{}, e.unavailable(ctx, err)
	}
	return g, nil
}

// parseHolders reads the reply of holders.lua.
func parseHolders(v any) (Grants, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 4 {
		return Grants{}, fmt.Errorf("unexpected holders reply %v", v)
	}
	var g Grants
	if x, _ := a[0].([]any); len(x) == 4 {
		ms, _ := x[0].(int64)
		fs, _ := x[1].(string)
		meta, _ := x[2].(string)
		token, _ := x[3].(string)
		fence, _ := strconv.ParseUint(fs, 10, 64)
		g.Grants = append(g.Grants, Grant{Holder: driver.Holder{Fence: fence, TTL: pttl(ms), Metadata: meta}, Token: token})
	}
	sh, _ := a[1].([]any)
	for i := 0; i+3 < len(sh); i += 4 {
		token, _ := sh[i].(string)
		ms, _ := sh[i+1].(int64)
		fs, _ := sh[i+2].(string)
		meta, _ := sh[i+3].(string)
		fence, _ := strconv.ParseUint(fs, 10, 64)
		g.Grants = append(g.Grants, Grant{Holder: driver.Holder{Shared: true, Fence: fence, TTL: pttl(ms), Metadata: meta}, Token: token})
	}
	slices.SortFunc(g.Grants, func(x, y Grant) int { return cmp.Compare(x.Fence, y.Fence) })
	if len(sh) > 0 {
		ls, _ := a[2].(string)
		g.Limit, _ = strconv.Atoi(ls)
	}
	w, _ := a[3].(int64)
	g.WritersWaiting = int(w)
	return g, nil
}
