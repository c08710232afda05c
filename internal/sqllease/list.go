package sqllease

import (
	"context"
	"fmt"

	"github.com/dlock-go/dlock/driver"
)

// ListBatch is the number of rows one List statement reads at most.
const ListBatch = 100

// PrefixEnd returns the smallest string that is greater, bytewise, than
// every valid UTF-8 string that starts with prefix, so that such a key k is
// exactly one with prefix <= k < PrefixEnd(prefix). Valid UTF-8 never holds
// the byte 0xff: the end of the empty prefix is "\xff", and the end of any
// other prefix is the prefix with its last byte below 0xff raised by one
// and what follows it dropped.
func PrefixEnd(prefix string) string {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] < 0xff {
			return prefix[:i] + string([]byte{prefix[i] + 1})
		}
	}
	return "\xff"
}

// Fetch reads at most n held keys k with lo <= k < hi, in bytewise key
// order, each with its Info.
type Fetch func(ctx context.Context, lo, hi string, n int) ([]driver.KeyInfo, error)

// List is driver.Lister's List over a driver's range scan: after
// check(ctx) has passed, it returns the held keys that start with prefix,
// in bytewise order, reading them with fetch in batches of ListBatch rows: each batch starts
// just after the last key of the one before (at that key plus "\x00", the
// next string in bytewise order). A batch whose keys are not strictly
// increasing bytewise, or leave [lo, hi), means a key column whose
// collation is not bytewise (a table made by hand): that is an error
// rather than a wrong or endless listing.
func List(ctx context.Context, prefix string, check func(context.Context) error, fetch Fetch) ([]driver.KeyInfo, error) {
	if err := check(ctx); err != nil {
		return nil, err
	}
	var out []driver.KeyInfo
	lo, hi := prefix, PrefixEnd(prefix)
	for {
		batch, err := fetch(ctx, lo, hi, ListBatch)
		if err != nil {
			return nil, err
		}
		for _, k := range batch {
			// lo is just past the previous key: this also checks that
			// the keys increase.
			if k.Key < lo || k.Key >= hi {
				return nil, fmt.Errorf("list: key %q out of bytewise order: the table's key column must compare bytes (binary collation)", k.Key)
			}
			out = append(out, k)
			lo = k.Key + "\x00"
		}
		if len(batch) < ListBatch {
			return out, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}
