package redisengine

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.BatchRefresher = (*Engine)(nil)

// RefreshBatch implements driver.BatchRefresher: the owner-checked refresh
// script for every lock, sent as one pipeline (one round trip per server in
// a Cluster).
func (e *Engine) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	_, errs := e.RefreshBatchGrants(ctx, reqs)
	return errs
}

// RefreshBatchGrants is RefreshBatch that also reports, for each lock
// refreshed, what RefreshGrant reports: the limit of a shared grant, or -1
// for the lock.
func (e *Engine) RefreshBatchGrants(ctx context.Context, reqs []driver.RefreshRequest) (limits []int, errs []error) {
	errs = make([]error, len(reqs))
	limits = make([]int, len(reqs))
	if len(reqs) == 0 {
		return limits, errs
	}
	if e.closed.Load() {
		fill(errs, driver.ErrClosed)
		return limits, errs
	}
	calls := make([]scriptCall, len(reqs))
	for i, r := range reqs {
		calls[i] = scriptCall{e.ks.refreshKeys(r.Key), []any{r.Token, millis(r.TTL)}}
	}
	// The pipeline runs in its own goroutine so that the call returns when
	// ctx ends even if the client ignores context deadlines on sockets.
	done := make(chan []*redis.Cmd, 1)
	go func() { done <- e.pipelineScript(ctx, refreshScript, calls) }()
	var cmds []*redis.Cmd
	select {
	case cmds = <-done:
	case <-ctx.Done():
		fill(errs, e.unavailable(ctx, ctx.Err()))
		return limits, errs
	}
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			errs[i] = e.unavailable(ctx, err)
		} else if limit, ok := refreshed(cmd.Val()); ok {
			limits[i] = limit
		} else {
			errs[i] = fmt.Errorf("%w: %q", driver.ErrNotHeld, reqs[i].Key)
		}
	}
	return limits, errs
}

// scriptCall is the keys and arguments of one script call in a pipeline.
type scriptCall struct {
	keys []string
	args []any
}

// pipelineScript sends script once per call in one pipeline, by hash
// (EVALSHA), then sends again by text, in a second pipeline, the calls a
// server answered NOSCRIPT (it had not cached the script, as after a
// restart). It returns the commands in the order of calls; every command
// carries its own error, transport failures included.
func (e *Engine) pipelineScript(ctx context.Context, script *redis.Script, calls []scriptCall) []*redis.Cmd {
	send := func(idx []int, eval bool) []*redis.Cmd {
		pipe := e.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(idx))
		for j, i := range idx {
			if eval {
				cmds[j] = script.Eval(ctx, pipe, calls[i].keys, calls[i].args...)
			} else {
				cmds[j] = script.EvalSha(ctx, pipe, calls[i].keys, calls[i].args...)
			}
		}
		_, _ = pipe.Exec(ctx)
		return cmds
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	cmds := send(all, false)
	var retry []int
	for i, c := range cmds {
		if c.Err() != nil && strings.HasPrefix(c.Err().Error(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		for j, c := range send(retry, true) {
			cmds[retry[j]] = c
		}
	}
	return cmds
}

func fill(errs []error, err error) {
	for i := range errs {
		errs[i] = err
	}
}

// stayQueued renews the client's entries in the waiting queues of keys, in
// one pipeline (see pipelineScript). Errors are ignored: an entry that
// runs out only costs the client its place, and its next attempt joins
// again.
func (e *Engine) stayQueued(ctx context.Context, keys []string) {
	if e.closed.Load() {
		return
	}
	calls := make([]scriptCall, len(keys))
	for j, key := range keys {
		all := e.ks.allKeys(key)
		calls[j] = scriptCall{[]string{all[3], all[4]}, []any{e.id, queueEntryTTLms}}
	}
	e.pipelineScript(ctx, stayScript, calls)
}

// leaveQueues takes the client out of the waiting queues of keys, in one
// pipeline (see pipelineScript), waking the waiters of a free key whose
// queue it headed. It returns when the pipeline is done or ctx ends,
// whichever comes first, even if the client does not apply context
// deadlines to its sockets. It works after Close has begun (it is how
// Close leaves the queues); errors are ignored: an entry left behind runs
// out within queueEntryTTL.
func (e *Engine) leaveQueues(ctx context.Context, keys []string) {
	calls := make([]scriptCall, len(keys))
	for j, key := range keys {
		all := e.ks.allKeys(key)
		calls[j] = scriptCall{[]string{all[0], all[3], all[4]}, []any{e.id, e.ks.channel(key)}}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.pipelineScript(ctx, leaveScript, calls)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
