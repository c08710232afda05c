package redlock

import (
	"context"
	"fmt"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

var _ driver.BatchRefresher = (*locker)(nil)

// RefreshBatch implements driver.BatchRefresher: every node refreshes the
// whole batch in one pipeline, all nodes in parallel, and a lock is
// refreshed when a majority of nodes refreshed it (a semaphore's permit:
// its quorum) — the same rule as Refresh, one round trip per node for the
// batch.
func (d *locker) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	errs := make([]error, len(reqs))
	if d.closed.Load() {
		for i := range errs {
			errs[i] = driver.ErrClosed
		}
		return errs
	}
	if len(reqs) == 0 {
		return errs
	}
	shortest := reqs[0].TTL
	for _, r := range reqs {
		shortest = min(shortest, r.TTL)
		d.permits.extend(tokenKey{r.Key, r.Token}, r.TTL)
	}
	tallies := make([]tally, len(reqs))
	for j := range tallies {
		tallies[j] = tally{n: len(d.nodes), quorum: d.quorum}
	}
	undecided := len(reqs)
	type outcome struct {
		limits []int
		errs   []error
	}
	f := startFanout(ctx, d.nodes, d.nodeTimeout(shortest), func(ctx context.Context, n *redisengine.Engine) (outcome, error) {
		limits, errs := n.RefreshBatchGrants(ctx, reqs)
		return outcome{limits, errs}, nil
	})
	err := f.collect(ctx, func(r reply[outcome]) bool {
		for j := range tallies {
			was := tallies[j].decided()
			var e error
			if j < len(r.val.errs) {
				e = r.val.errs[j]
				d.raiseQuorum(&tallies[j], r.val.limits[j], e)
			} else {
				e = driver.ErrUnavailable
			}
			tallies[j].count(reply[struct{}]{node: r.node, err: e})
			if !was && tallies[j].decided() {
				undecided--
			}
		}
		return undecided == 0
	})
	for i, r := range reqs {
		if err != nil && !tallies[i].decided() {
			errs[i] = fmt.Errorf("redlock: refresh %q: %w", r.Key, err)
			continue
		}
		errs[i] = tallies[i].result("refresh", r.Key, f.unheard())
	}
	return errs
}
