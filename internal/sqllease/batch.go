package sqllease

import (
	"fmt"

	"github.com/dlock-go/dlock/driver"
)

// Batch is a RefreshBatch call's requests with exact duplicates folded
// together: one item per distinct (key, token), refreshed for the longest
// TTL asked. Requests for the same key with different tokens stay separate
// items; at most one of them can own the key.
type Batch struct {
	// Items are the distinct requests, in order of first appearance.
	Items []driver.RefreshRequest
	// slot maps each original request to its item.
	slot []int
}

type keyToken struct{ key, token string }

// NewBatch folds reqs into a Batch.
func NewBatch(reqs []driver.RefreshRequest) *Batch {
	b := &Batch{slot: make([]int, len(reqs))}
	seen := make(map[keyToken]int, len(reqs))
	for i, r := range reqs {
		kt := keyToken{r.Key, r.Token}
		if j, ok := seen[kt]; ok {
			b.slot[i] = j
			b.Items[j].TTL = max(b.Items[j].TTL, r.TTL)
			continue
		}
		seen[kt] = len(b.Items)
		b.slot[i] = len(b.Items)
		b.Items = append(b.Items, r)
	}
	return b
}

// Spread returns one error per original request, in order, from the errors
// of the items.
func (b *Batch) Spread(itemErrs []error) []error {
	errs := make([]error, len(b.slot))
	for i, j := range b.slot {
		errs[i] = itemErrs[j]
	}
	return errs
}

// Chunks splits n items into consecutive ranges [lo, hi) of at most
// maxRows items, closing a range early once the sizes of its items add up
// to maxBytes or more (every range holds at least one item). size may be
// nil.
func Chunks(n, maxRows, maxBytes int, size func(i int) int) [][2]int {
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

// NotHeld is the error of a refresh whose key the token does not own.
func NotHeld(key string) error {
	return fmt.Errorf("%w: %q", driver.ErrNotHeld, key)
}

// Fill sets errs[lo:hi] to err.
func Fill(errs []error, lo, hi int, err error) {
	for i := lo; i < hi; i++ {
		errs[i] = err
	}
}
