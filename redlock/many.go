package redlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

var _ driver.MultiLocker = (*locker)(nil)

// AcquireMany implements driver.MultiLocker with the Redlock algorithm
// over one script per node: every node is asked for all the keys at once
// (one round trip each, in parallel), and a node counts for the attempt
// only when it granted every key. The keys are granted when a majority of
// nodes did within the lease's validity; each key's fence is the highest
// its granting nodes gave, recorded on a majority (one more round, for the
// keys only) where they disagree. Otherwise whatever any node granted is
// given back on every node, and each key that stood in the way reports how
// long it may stay held.
//
// On nodes that are Redis Clusters the keys must share one hash slot; keys
// of different slots, or more than redisengine.MaxManyKeys keys, give an
// error wrapping errors.ErrUnsupported before anything is sent.
func (d *locker) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	if d.closed.Load() {
		return nil, driver.ErrClosed
	}
	for _, n := range d.nodes {
		if err := n.ManyFits(reqs); err != nil {
			return nil, fmt.Errorf("redlock: %w", err)
		}
	}
	if len(reqs) == 0 {
		return []driver.Result{}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	attempt := d.nextAttempt()
	start := time.Now()
	ttl := reqs[0].TTL
	validUntil := driver.ValidUntil(start, ttl)
	timeout := d.nodeTimeout(ttl)
	what := fmt.Sprintf("acquire %d keys (%q...)", len(reqs), reqs[0].Key)

	t := tally{n: len(d.nodes), quorum: d.quorum}
	var granted, refused [][]driver.Result
	f := startFanout(ctx, d.nodes, timeout, func(ctx context.Context, n *redisengine.Engine) ([]driver.Result, error) {
		return n.AcquireManyCounted(ctx, reqs, attempt)
	})
	take := func(r reply[[]driver.Result]) bool {
		switch {
		case r.err != nil:
			t.fail(r.err)
		case len(r.val) == len(reqs) && allAcquired(r.val):
			t.ok++
			granted = append(granted, r.val)
		default:
			t.refused++
			refused = append(refused, r.val)
		}
		return t.decided()
	}
	err := f.collect(ctx, take)
	if err == nil && t.ok < t.quorum && t.ok+t.refused < t.quorum {
		// Too few nodes answered yet to tell contention from
		// unavailability: hear the rest (within the node timeout).
		err = f.collect(ctx, func(r reply[[]driver.Result]) bool { take(r); return false })
	}
	if err != nil || t.ok < t.quorum {
		d.giveBackMany(f.done, reqs, attempt)
		switch {
		case err != nil:
			return nil, fmt.Errorf("redlock: %s: %w", what, err)
		case t.ok+t.refused < t.quorum:
			return nil, t.unavailable(what, f.unheard())
		}
		return refusedMany(reqs, refused, t), nil
	}

	out := make([]driver.Result, len(reqs))
	var disagree []int
	for i := range reqs {
		fence := granted[0][i].Fence
		agree := true
		for _, g := range granted[1:] {
			agree = agree && g[i].Fence == fence
			fence = max(fence, g[i].Fence)
		}
		out[i] = driver.Result{Acquired: true, Fence: fence, ValidUntil: validUntil}
		if !agree {
			disagree = append(disagree, i)
		}
	}
	recErr := d.recordFences(ctx, reqs, out, disagree, timeout)
	if elapsed := time.Since(start); !time.Now().Before(validUntil) {
		d.giveBackMany(f.done, reqs, attempt)
		return nil, fmt.Errorf("%w: redlock: %s: a majority granted them after %v, past the validity of their %v TTL; given back",
			driver.ErrUnavailable, what, elapsed.Round(time.Millisecond), ttl)
	}
	if recErr != nil {
		d.giveBackMany(f.done, reqs, attempt)
		return nil, recErr
	}
	fences := make([]uint64, len(out))
	for i, r := range out {
		fences[i] = r.Fence
	}
	settle(d, f, reqs, fences, func(r []driver.Result) []driver.Result { return r })
	return out, nil
}

// allAcquired reports whether a node granted every key.
func allAcquired(res []driver.Result) bool {
	for _, r := range res {
		if !r.Acquired {
			return false
		}
	}
	return true
}

// refusedMany is AcquireMany's answer when no majority granted the keys:
// none acquired, and for each key the nodes that reported it in the way
// estimate, as holderTTL does for one key, how long it may stay held.
func refusedMany(reqs []driver.Request, refused [][]driver.Result, t tally) []driver.Result {
	out := make([]driver.Result, len(reqs))
	for i := range reqs {
		var ttls []time.Duration
		for _, res := range refused {
			if i < len(res) && res[i].HolderTTL > 0 {
				ttls = append(ttls, res[i].HolderTTL)
			}
		}
		if len(ttls) > 0 {
			out[i].HolderTTL = holderTTL(ttls, tally{n: t.n, quorum: t.quorum, refused: len(ttls)})
		}
	}
	return out
}

// recordFences records, in parallel, the fence of each key of reqs at the
// positions in idx on a majority of nodes (see recordFence).
func (d *locker) recordFences(ctx context.Context, reqs []driver.Request, out []driver.Result, idx []int, timeout time.Duration) error {
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for j, i := range idx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[j] = d.recordFence(ctx, reqs[i], out[i].Fence, timeout)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// giveBackMany gives back, as giveBack does for one key, every key of
// reqs that this attempt took, on every node.
func (d *locker) giveBackMany(done []chan struct{}, reqs []driver.Request, attempt uint64) {
	for i, n := range d.nodes {
		go func() {
			<-done[i]
			ctx, cancel := context.WithTimeout(context.Background(), max(d.nodeTimeout(0), time.Second))
			defer cancel()
			for _, r := range reqs {
				_ = n.GiveBack(ctx, r.Key, r.Token, attempt)
			}
		}()
	}
}
