package sqllease

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/dlock-go/dlock/driver"
)

// Limits bound the statements of RefreshBatch.
type Limits struct {
	// Rows is the most locks one statement carries.
	Rows int
	// Bytes, when above zero, closes a statement's locks early once their
	// keys and tokens add up to that many bytes or more (every statement
	// carries at least one lock). Zero: no such bound.
	Bytes int
	// Sorted sends the locks in key order (then token order), so that the
	// statements of two clients over the same keys lock their rows in one
	// order and cannot deadlock on each other.
	Sorted bool
}

// RefreshBatch is driver.BatchRefresher's RefreshBatch over a driver's
// statement for a chunk of locks. Requests with the same key and token are
// folded into one lock, refreshed for the longest of their TTLs, and share
// its result; the locks are split into chunks by lim, and refresh
// refreshes each chunk and sets the chunk's errors (errs, as long as
// items), after check(ctx) has passed for it. When check fails, before
// the first chunk or before a later one, its error is the error of every
// lock not yet sent. It returns one error per request, in order.
func RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest, lim Limits, check func(context.Context) error,
	refresh func(ctx context.Context, items []driver.RefreshRequest, errs []error)) []error {
	b := newBatch(reqs)
	errs := make([]error, len(b.items))
	if err := check(ctx); err != nil {
		Fill(errs, 0, len(errs), err)
		return b.spread(errs)
	}
	if lim.Sorted {
		b.sort()
	}
	var size func(int) int
	if lim.Bytes > 0 {
		size = func(i int) int { return len(b.items[i].Key) + len(b.items[i].Token) }
	}
	for _, c := range chunks(len(b.items), lim.Rows, lim.Bytes, size) {
		if err := check(ctx); err != nil {
			Fill(errs, c[0], c[1], err)
			continue
		}
		refresh(ctx, b.items[c[0]:c[1]], errs[c[0]:c[1]])
	}
	return b.spread(errs)
}

// batch is a RefreshBatch call's requests with exact duplicates folded
// together: one item per distinct (key, token), refreshed for the longest
// TTL asked. Requests for the same key with different tokens stay separate
// items; at most one of them can own the key.
type batch struct {
	// items are the distinct requests, in order of first appearance (or
	// sorted, after sort).
	items []driver.RefreshRequest
	// slot maps each original request to its item.
	slot []int
}

type keyToken struct{ key, token string }

// newBatch folds reqs into a batch.
func newBatch(reqs []driver.RefreshRequest) *batch {
	b := &batch{slot: make([]int, len(reqs))}
	seen := make(map[keyToken]int, len(reqs))
	for i, r := range reqs {
		kt := keyToken{r.Key, r.Token}
		if j, ok := seen[kt]; ok {
			b.slot[i] = j
			b.items[j].TTL = max(b.items[j].TTL, r.TTL)
			continue
		}
		seen[kt] = len(b.items)
		b.slot[i] = len(b.items)
		b.items = append(b.items, r)
	}
	return b
}

// sort puts the items in key order, then token order, keeping each
// request's slot on its item.
func (b *batch) sort() {
	order := make([]int, len(b.items))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		return cmp.Or(strings.Compare(b.items[i].Key, b.items[j].Key), strings.Compare(b.items[i].Token, b.items[j].Token))
	})
	items := make([]driver.RefreshRequest, len(order))
	moved := make([]int, len(order)) // old position -> new
	for to, from := range order {
		items[to] = b.items[from]
		moved[from] = to
	}
	for i, j := range b.slot {
		b.slot[i] = moved[j]
	}
	b.items = items
}

// spread returns one error per original request, in order, from the errors
// of the items.
func (b *batch) spread(itemErrs []error) []error {
	errs := make([]error, len(b.slot))
	for i, j := range b.slot {
		errs[i] = itemErrs[j]
	}
	return errs
}

// chunks splits n items into consecutive ranges [lo, hi) of at most
// maxRows items, closing a range early once the sizes of its items add up
// to maxBytes or more (every range holds at least one item). size may be
// nil: no bound on bytes.
func chunks(n, maxRows, maxBytes int, size func(i int) int) [][2]int {
	var out [][2]int
	lo, bytes := 0, 0
	for i := range n {
		if size != nil {
			bytes += size(i)
		}
		if i+1-lo >= maxRows || (size != nil && bytes >= maxBytes) || i == n-1 {
			out = append(out, [2]int{lo, i + 1})
			lo, bytes = i+1, 0
		}
	}
	return out
}

// Fill sets errs[lo:hi] to err.
func Fill(errs []error, lo, hi int, err error) {
	for i := lo; i < hi; i++ {
		errs[i] = err
	}
}
