package sqllease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dlock-go/dlock/driver"
)

func TestPrefixEnd(t *testing.T) {
	tests := []struct{ prefix, want string }{
		{"", "\xff"},
		{"a", "b"},
		{"b/", "b0"},
		{"a\x00", "a\x01"},
		{"ü", "\xc3\xbd"},
		{"\U0010ffff", "\xf4\x8f\xbf\xc0"},
		{"a\xff", "b"}, // not UTF-8, but still correct
	}
	for _, tc := range tests {
		if got := PrefixEnd(tc.prefix); got != tc.want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	// Every key with the prefix is inside [prefix, end), every other
	// key outside.
	keys := []string{"a", "a\x00", "a\x7f", "aa", "a\U0010ffff", "ab", "b", "b/", "b/1", "b0", "ü", "üx", "\U0010ffff", "\U0010ffffz"}
	for _, p := range []string{"", "a", "b/", "ü", "\U0010ffff", "a\x00"} {
		end := PrefixEnd(p)
		for _, k := range keys {
			in := k >= p && k < end
			if in != strings.HasPrefix(k, p) {
				t.Errorf("prefix %q: key %q in [prefix, %q) = %v, has prefix = %v", p, k, end, in, !in)
			}
		}
	}
}

// table is a sorted set of held keys, read by a Fetch as a range scan
// would, counting the calls.
type table struct {
	keys  []string
	calls int
}

func (tb *table) fetch(ctx context.Context, lo, hi string, n int) ([]driver.KeyInfo, error) {
	tb.calls++
	var out []driver.KeyInfo
	for _, k := range tb.keys {
		if k >= lo && k < hi && len(out) < n {
			out = append(out, driver.KeyInfo{Key: k, Info: driver.Info{Held: true}})
		}
	}
	return out, nil
}

func TestList(t *testing.T) {
	var many []string
	for i := range 2*ListBatch + 5 {
		many = append(many, fmt.Sprintf("m/%04d", i))
	}
	base := []string{"a", "a\x00", "a\x00b", "a ", "A", "b/1", "b/2", "b0", "ü/ß"}
	tb := &table{keys: append(slices.Clone(base), many...)}
	slices.Sort(tb.keys)
	tests := []struct {
		prefix string
		want   []string
		calls  int
	}{
		{"a", []string{"a", "a\x00", "a\x00b", "a "}, 1},
		{"a\x00", []string{"a\x00", "a\x00b"}, 1},
		{"b/", []string{"b/1", "b/2"}, 1},
		{"m/", many, 3},
		{"", tb.keys, 3},
		{"none", nil, 1},
	}
	for _, tc := range tests {
		tb.calls = 0
		got, err := List(t.Context(), tc.prefix, open, tb.fetch)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		var keys []string
		for _, k := range got {
			keys = append(keys, k.Key)
		}
		if !slices.Equal(keys, tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, keys, tc.want)
		}
		if tb.calls != tc.calls {
			t.Errorf("List(%q) made %d fetches, want %d", tc.prefix, tb.calls, tc.calls)
		}
	}
}

// A key column that does not compare bytewise (a case-insensitive
// collation) returns keys out of order: List says so instead of listing
// wrongly or looping.
func TestListOutOfOrder(t *testing.T) {
	fetch := func(ctx context.Context, lo, hi string, n int) ([]driver.KeyInfo, error) {
		return []driver.KeyInfo{{Key: "b"}, {Key: "a"}}, nil
	}
	if _, err := List(t.Context(), "", open, fetch); err == nil || !strings.Contains(err.Error(), "bytewise") {
		t.Errorf("List over keys out of order = %v, want an error about bytewise order", err)
	}
	outside := func(ctx context.Context, lo, hi string, n int) ([]driver.KeyInfo, error) {
		return []driver.KeyInfo{{Key: "B/1"}}, nil
	}
	if _, err := List(t.Context(), "b/", open, outside); err == nil {
		t.Errorf("List over a key outside the prefix = nil error, want one")
	}
}

// open is the check of a driver that is open: the context's error.
func open(ctx context.Context) error { return ctx.Err() }

// List makes no fetch when the driver's check refuses the call.
func TestListChecks(t *testing.T) {
	tb := &table{keys: []string{"a"}}
	closed := func(context.Context) error { return driver.ErrClosed }
	if _, err := List(t.Context(), "", closed, tb.fetch); !errors.Is(err, driver.ErrClosed) || tb.calls != 0 {
		t.Errorf("List on a closed driver = %v after %d fetches, want ErrClosed after none", err, tb.calls)
	}
}
