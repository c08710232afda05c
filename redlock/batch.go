package redlock

import (
	"context"
	"fmt"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/redisdlock"
)

var _ driver.BatchRefresher = (*Driver)(nil)

// RefreshBatch implements driver.BatchRefresher: every node refreshes the
// whole batch in one pipeline, all nodes in parallel, and a lock is
// refreshed when a majority of nodes refreshed it — the same rule as
// Refresh, one round trip per node for the batch.
func (d *Driver) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	errs := make([]error, len(reqs))
	if d.closed.Load() {
		for i := range errs {
			errs[i] = driver.ErrClosed
		}
		return errs
	}
	var (
		valid    []driver.RefreshRequest
		idx      []int
		shortest = MaxNodeTimeout * 10
	)
	for i, r := range reqs {
		if err := checkTTL(r.TTL); err != nil {
			errs[i] = err
			continue
		}
		valid = append(valid, r)
		idx = append(idx, i)
		shortest = min(shortest, r.TTL)
	}
	if len(valid) == 0 {
		return errs
	}
	tallies := make([]tally, len(valid))
	for j := range tallies {
		tallies[j] = tally{n: len(d.nodes), quorum: d.quorum}
	}
	undecided := len(valid)
	f := startFanout(ctx, d.nodes, d.nodeTimeout(shortest), func(ctx context.Context, n *redisdlock.Driver) ([]error, error) {
		return n.RefreshBatch(ctx, valid), nil
	})
	err := f.collect(ctx, func(r reply[[]error]) bool {
		for j := range tallies {
			was := tallies[j].decided()
			var e error
			if j < len(r.val) {
				e = r.val[j]
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
	for j, i := range idx {
		if err != nil && !tallies[j].decided() {
			errs[i] = fmt.Errorf("redlock: refresh %q: %w", valid[j].Key, err)
			continue
		}
		errs[i] = tallies[j].result("refresh", valid[j].Key)
	}
	return errs
}
