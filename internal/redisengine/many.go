package redisengine

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
)

var (
	//go:embed lua/many.lua
	manyLua string
	//go:embed lua/setmeta.lua
	setMetaLua string

	manyScript    = redis.NewScript(helpers + manyLua)
	setMetaScript = redis.NewScript(helpers + setMetaLua)
)

// MaxManyKeys is the most keys AcquireMany takes in one script; more give
// an error wrapping errors.ErrUnsupported.
const MaxManyKeys = 1000

var (
	_ driver.MultiLocker    = (*Engine)(nil)
	_ driver.MetadataSetter = (*Engine)(nil)
)

// AcquireMany implements driver.MultiLocker with one script over every
// key: all of them are granted, as Acquire grants one, or none is. On a
// Redis Cluster the keys must share one hash slot (a common hash tag,
// "{order:7}:a" and "{order:7}:b"); keys of different slots, or more than
// MaxManyKeys keys, give an error wrapping errors.ErrUnsupported before
// anything is sent.
func (e *Engine) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	return e.AcquireManyCounted(ctx, reqs, 0)
}

// AcquireManyCounted is AcquireMany as a counted attempt (see
// AcquireCounted): fences from the keys' counters alone while they exist,
// queues not deciding who is first but still refusing, and each grant
// recorded with attempt, for GiveBack.
func (e *Engine) AcquireManyCounted(ctx context.Context, reqs []driver.Request, attempt uint64) ([]driver.Result, error) {
	if err := e.ManyFits(reqs); err != nil {
		return nil, err
	}
	if len(reqs) == 0 {
		return []driver.Result{}, nil
	}
	keys := make([]string, 0, 9*len(reqs))
	args := make([]any, 3, 3+2*len(reqs))
	args[0], args[1], args[2] = millis(reqs[0].TTL), e.fenceTTLms, ""
	if attempt != 0 {
		args[2] = strconv.FormatUint(attempt, 10)
	}
	for _, r := range reqs {
		keys = append(keys, e.ks.allKeys(r.Key)...)
		args = append(args, r.Token, r.Metadata)
	}
	v, err := e.run(ctx, manyScript, keys, args, nil)
	if err != nil {
		return nil, err
	}
	out, err := parseMany(v, len(reqs))
	if err != nil {
		return nil, e.unavailable(ctx, err)
	}
	return out, nil
}

// ManyFits returns an error wrapping errors.ErrUnsupported when reqs
// cannot go in one script: more than MaxManyKeys keys, or keys of
// different slots on a Cluster. It sends nothing.
func (e *Engine) ManyFits(reqs []driver.Request) error {
	if len(reqs) > MaxManyKeys {
		return fmt.Errorf("redis: AcquireMany of %d keys, more than %d in one script: %w", len(reqs), MaxManyKeys, errors.ErrUnsupported)
	}
	if _, ok := e.rdb.(*redis.ClusterClient); !ok || len(reqs) == 0 {
		return nil
	}
	first := slot(e.ks.lock(reqs[0].Key))
	for _, r := range reqs[1:] {
		if s := slot(e.ks.lock(r.Key)); s != first {
			return fmt.Errorf("redis: AcquireMany: keys %q and %q are in different Cluster slots (%d, %d); a common hash tag puts them in one: %w",
				reqs[0].Key, r.Key, first, s, errors.ErrUnsupported)
		}
	}
	return nil
}

// parseMany reads the reply of many.lua for n keys.
func parseMany(v any, n int) ([]driver.Result, error) {
	a, ok := v.([]any)
	if !ok || len(a) != n+1 {
		return nil, fmt.Errorf("unexpected acquire-many reply %v", v)
	}
	granted, _ := a[0].(int64)
	out := make([]driver.Result, n)
	for i := range out {
		if granted == 1 {
			s, _ := a[i+1].(string)
			fence, err := strconv.ParseUint(s, 10, 64)
			if err != nil || fence == 0 {
				return nil, fmt.Errorf("unexpected fence %v in acquire-many reply", a[i+1])
			}
			out[i] = driver.Result{Acquired: true, Fence: fence}
			continue
		}
		ms, _ := a[i+1].(int64)
		out[i].HolderTTL = pttl(ms)
	}
	return out, nil
}

// SetMetadata implements driver.MetadataSetter with one script: the
// metadata of token's lock, or of its live shared grant, is replaced, its
// fence and expiry kept, and the change announced on the key's release
// channel (observers look again).
func (e *Engine) SetMetadata(ctx context.Context, key, token, metadata string) error {
	keys := pick(e.ks.allKeys(key), kLock, kInfo, kShares, kSInfo, kQueue, kWaits)
	v, err := e.run(ctx, setMetaScript, keys, []any{token, metadata, e.ks.channel(key)}, nil)
	if err != nil {
		return err
	}
	switch n, ok := v.(int64); {
	case !ok:
		return e.unavailable(ctx, fmt.Errorf("unexpected set-metadata reply %v", v))
	case n != 1:
		return fmt.Errorf("%w: %q", driver.ErrNotHeld, key)
	}
	return nil
}
