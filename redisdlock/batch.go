package redisdlock

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.BatchRefresher = (*Driver)(nil)

// RefreshBatch implements driver.BatchRefresher: the owner-checked refresh
// script for every lock, sent as one pipeline (one round trip per server in
// a Cluster).
func (d *Driver) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	errs := make([]error, len(reqs))
	var idx []int
	for i, r := range reqs {
		if r.TTL < MinTTL {
			errs[i] = fmt.Errorf("%w: %v is below the redis minimum of %v", driver.ErrInvalidTTL, r.TTL, MinTTL)
			continue
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return errs
	}
	if d.closed.Load() {
		fill(errs, idx, driver.ErrClosed)
		return errs
	}
	// The pipeline runs in its own goroutine so that the call returns when
	// ctx ends even if the client ignores context deadlines on sockets.
	done := make(chan []*redis.Cmd, 1)
	go func() {
		cmds := d.pipelineRefresh(ctx, reqs, idx, false)
		// Scripts not cached on a server (after a restart): send the
		// script text for those, once.
		var retry []int
		for j, c := range cmds {
			if c.Err() != nil && strings.HasPrefix(c.Err().Error(), "NOSCRIPT") {
				retry = append(retry, idx[j])
			}
		}
		if len(retry) > 0 {
			again := d.pipelineRefresh(ctx, reqs, retry, true)
			k := 0
			for j := range cmds {
				if k < len(retry) && idx[j] == retry[k] {
					cmds[j] = again[k]
					k++
				}
			}
		}
		done <- cmds
	}()
	var cmds []*redis.Cmd
	select {
	case cmds = <-done:
	case <-ctx.Done():
		fill(errs, idx, d.unavailable(ctx.Err()))
		return errs
	}
	for j, i := range idx {
		if err := cmds[j].Err(); err != nil {
			errs[i] = d.unavailable(err)
		} else if n, _ := cmds[j].Val().(int64); n != 1 {
			errs[i] = fmt.Errorf("%w: %q", driver.ErrNotHeld, reqs[i].Key)
		}
	}
	return errs
}

// pipelineRefresh sends the refresh script for reqs[idx...] in one pipeline,
// by hash (EVALSHA) or, with eval, by text.
func (d *Driver) pipelineRefresh(ctx context.Context, reqs []driver.RefreshRequest, idx []int, eval bool) []*redis.Cmd {
	pipe := d.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(idx))
	for j, i := range idx {
		lock, _, info := d.ks.keys(reqs[i].Key)
		keys, args := []string{lock, info}, []any{reqs[i].Token, millis(reqs[i].TTL)}
		if eval {
			cmds[j] = refreshScript.Eval(ctx, pipe, keys, args...)
		} else {
			cmds[j] = refreshScript.EvalSha(ctx, pipe, keys, args...)
		}
	}
	// Exec's error is the first command's error; every command carries
	// its own, transport failures included.
	_, _ = pipe.Exec(ctx)
	return cmds
}

func fill(errs []error, idx []int, err error) {
	for _, i := range idx {
		errs[i] = err
	}
}

// stayQueued renews the client's entries in the waiting queues of keys, in
// one pipeline (a second, by script text, where a server had not cached
// the script). Errors are ignored: an entry that runs out only costs the
// client its place, and its next attempt joins again.
func (d *Driver) stayQueued(ctx context.Context, keys []string) {
	if d.closed.Load() {
		return
	}
	send := func(keys []string, eval bool) []*redis.Cmd {
		pipe := d.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(keys))
		for j, key := range keys {
			all := d.ks.allKeys(key)
			k, args := []string{all[3], all[4]}, []any{d.id, queueEntryTTLms}
			if eval {
				cmds[j] = stayScript.Eval(ctx, pipe, k, args...)
			} else {
				cmds[j] = stayScript.EvalSha(ctx, pipe, k, args...)
			}
		}
		_, _ = pipe.Exec(ctx)
		return cmds
	}
	var retry []string
	for j, c := range send(keys, false) {
		if c.Err() != nil && strings.HasPrefix(c.Err().Error(), "NOSCRIPT") {
			retry = append(retry, keys[j])
		}
	}
	if len(retry) > 0 {
		send(retry, true)
	}
}
