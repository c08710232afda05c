package redlock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

var _ driver.SharedLocker = (*locker)(nil)

// sharedQuorum returns how many of the n nodes must grant a shared grant of
// limit (0: no limit) for it to count.
//
// A reader (no limit) needs a majority, like a writer: any reader's
// majority and any writer's overlap on a node, which refused one of them.
// A majority is not enough for a limit of 2 or more: n+1 holders could
// each have a different majority with no node seeing more than the limit
// (limit 2 on 5 nodes: holders on {1,2,3}, {3,4,5} and {1,2,4}, and no
// node has more than 2). A permit therefore needs q nodes with
// (limit+1)·q > limit·n: limit+1 holders then have more grants than the n
// nodes can hold with limit each, so some node would have had to grant
// limit+1 of them, which it refuses. That is q = ⌊limit·n/(limit+1)⌋ + 1,
// which is also more than half, so permits and writers exclude each other
// too. A limit of 1 needs a majority; a limit of n-1 or more needs every
// node.
func sharedQuorum(n, limit int) int {
	if limit <= 0 {
		return n/2 + 1
	}
	return limit*n/(limit+1) + 1
}

// raiseQuorum raises t's quorum to what the grant a node refreshed needs:
// a node's refresh of a shared grant reports its limit (-1: the lock). The
// quorum only grows, so a decision taken under the smaller one stands.
func (d *locker) raiseQuorum(t *tally, limit int, err error) {
	if err == nil && limit > 0 {
		t.quorum = max(t.quorum, sharedQuorum(len(d.nodes), limit))
	}
}

// AcquireShared implements driver.SharedLocker: one attempt on every node
// at once with the engine's shared script, granted when sharedQuorum nodes
// grant it within the lease's validity, with a fence recorded as for
// Acquire; whatever was granted is given back otherwise. When so many
// nodes report another limit that no quorum can grant, the error wraps
// ErrLimitMismatch.
func (d *locker) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	q := sharedQuorum(len(d.nodes), req.Limit)
	tk := tokenKey{req.Key, req.Token}
	if req.Limit > 0 {
		// Its Release waits for every node (see Release); marked before
		// the attempt, whose outcome may be unknown.
		d.permits.add(tk, req.TTL)
	}
	res, err := d.acquire(ctx, req.Request, q, func(ctx context.Context, n *redisengine.Engine, attempt uint64) (driver.Result, error) {
		return n.AcquireSharedCounted(ctx, req, attempt)
	})
	if req.Limit > 0 && !res.Acquired && (err == nil || errors.Is(err, driver.ErrLimitMismatch)) {
		d.permits.take(tk) // refused: nothing of it to release
	}
	return res, err
}

// tokenKey names a grant: its key and token.
type tokenKey struct{ key, token string }

// permitGrace is how long past its TTL a permit's entry in a permitSet
// stays: the nodes start the lease when the request reaches them.
const permitGrace = time.Second

// minPermitSweep is the size of a permitSet from which adding sweeps it.
const minPermitSweep = 64

// permitSet holds the semaphore permits a driver asked for and has not
// released, each with when its lease ends at the latest (as last asked
// for or refreshed). A permit that is lost and never released leaves it
// once that time has passed: adding sweeps the set whenever it has doubled
// since the last sweep, so it stays within about twice the permits alive.
type permitSet struct {
	mu    sync.Mutex
	m     map[tokenKey]time.Time
	sweep int // the size at which the next add sweeps
}

// add records tk with a lease of ttl from now.
func (p *permitSet) add(tk tokenKey, ttl time.Duration) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[tokenKey]time.Time{}
	}
	if len(p.m) >= max(p.sweep, minPermitSweep) {
		for k, end := range p.m {
			if now.After(end) {
				delete(p.m, k)
			}
		}
		p.sweep = 2 * len(p.m)
	}
	p.m[tk] = now.Add(ttl + permitGrace)
}

// extend moves the end of tk's lease, if tk is in the set, to ttl from now.
func (p *permitSet) extend(tk tokenKey, ttl time.Duration) {
	end := time.Now().Add(ttl + permitGrace)
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[tk]; ok {
		p.m[tk] = end
	}
}

// take removes tk and reports whether it was in the set.
func (p *permitSet) take(tk tokenKey) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.m[tk]
	delete(p.m, tk)
	return ok
}

// size returns how many permits the set holds.
func (p *permitSet) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.m)
}

// Holders implements driver.SharedLocker. It reads every node's grants of
// key at once and needs a majority of nodes to answer. The exclusive
// holder counts when a majority holds it for one token; a shared grant
// when its token has one on as many nodes as its limit's quorum needs
// (see sharedQuorum), the limit being the one most nodes report. A grant's
// TTL is how long that many nodes still hold it, its fence the one most
// of them report. WritersWaiting is the number of waiting writers that a
// majority of nodes at least report.
func (d *locker) Holders(ctx context.Context, key string) (driver.Holders, error) {
	if d.closed.Load() {
		return driver.Holders{}, driver.ErrClosed
	}
	t := tally{n: len(d.nodes), quorum: d.quorum}
	var seen []redisengine.Grants
	f := startFanout(ctx, d.nodes, d.nodeTimeout(0), func(ctx context.Context, n *redisengine.Engine) (redisengine.Grants, error) {
		return n.Grants(ctx, key)
	})
	err := f.collect(ctx, func(r reply[redisengine.Grants]) bool {
		if r.err != nil {
			t.fail(r.err)
		} else {
			t.ok++
			seen = append(seen, r.val)
		}
		return false // hear every node that answers in time
	})
	if err != nil {
		return driver.Holders{}, fmt.Errorf("redlock: holders %q: %w", key, err)
	}
	if t.ok < t.quorum {
		return driver.Holders{}, t.unavailable(fmt.Sprintf("holders %q", key), f.unheard())
	}
	return d.combineGrants(seen), nil
}

// combineGrants is what the nodes' answers seen say of a key's grants (see
// Holders).
func (d *locker) combineGrants(seen []redisengine.Grants) driver.Holders {
	type byToken struct {
		shared bool
		holds  []driver.Holder
	}
	tokens := map[string]*byToken{}
	limits := map[int]int{}
	var writers []int
	for _, g := range seen {
		writers = append(writers, g.WritersWaiting)
		shared := false
		for _, x := range g.Grants {
			k := x.Token
			if x.Shared {
				k = "s:" + k
				shared = true
			} else {
				k = "x:" + k
			}
			if tokens[k] == nil {
				tokens[k] = &byToken{shared: x.Shared}
			}
			tokens[k].holds = append(tokens[k].holds, x.Holder)
		}
		if shared {
			limits[g.Limit]++
		}
	}
	limit, most := 0, 0
	for l, c := range limits {
		if c > most || c == most && l > limit {
			limit, most = l, c
		}
	}
	var h driver.Holders
	for _, bt := range tokens {
		need := d.quorum
		if bt.shared {
			need = sharedQuorum(len(d.nodes), limit)
		}
		if len(bt.holds) < need {
			continue
		}
		// Longest first: the need-th is how long enough nodes hold it.
		slices.SortFunc(bt.holds, func(a, b driver.Holder) int { return cmp.Compare(b.TTL, a.TTL) })
		hs := make([]holding, len(bt.holds))
		for i, x := range bt.holds {
			hs[i] = holding{info: driver.Info{Fence: x.Fence}}
		}
		h.Holders = append(h.Holders, driver.Holder{Shared: bt.shared, Fence: d.grantFence(hs), TTL: bt.holds[need-1].TTL, Metadata: bt.holds[0].Metadata})
		if bt.shared {
			h.Limit = limit
		}
	}
	slices.SortFunc(h.Holders, func(a, b driver.Holder) int { return cmp.Compare(a.Fence, b.Fence) })
	slices.SortFunc(writers, func(a, b int) int { return cmp.Compare(b, a) })
	if len(writers) >= d.quorum {
		h.WritersWaiting = writers[d.quorum-1]
	}
	return h
}
