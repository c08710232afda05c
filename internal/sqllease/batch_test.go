package sqllease

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
)

func TestBatch(t *testing.T) {
	reqs := []driver.RefreshRequest{
		{Key: "a", Token: "1", TTL: time.Second},
		{Key: "b", Token: "1", TTL: time.Second},
		{Key: "a", Token: "1", TTL: 3 * time.Second},
		{Key: "a", Token: "2", TTL: time.Second},
		{Key: "a", Token: "1", TTL: 2 * time.Second},
	}
	b := newBatch(reqs)
	want := []driver.RefreshRequest{
		{Key: "a", Token: "1", TTL: 3 * time.Second},
		{Key: "b", Token: "1", TTL: time.Second},
		{Key: "a", Token: "2", TTL: time.Second},
	}
	if !reflect.DeepEqual(b.items, want) {
		t.Errorf("Items = %v, want %v", b.items, want)
	}
	e0, e2 := errors.New("e0"), errors.New("e2")
	got := b.spread([]error{e0, nil, e2})
	if wantErrs := []error{e0, nil, e0, e2, e0}; !reflect.DeepEqual(got, wantErrs) {
		t.Errorf("Spread = %v, want %v", got, wantErrs)
	}

	b = newBatch(reqs[:2])
	if !reflect.DeepEqual(b.items, reqs[:2]) {
		t.Errorf("NewBatch of distinct requests: Items = %v, want them unchanged", b.items)
	}
	if b = newBatch(nil); len(b.items) != 0 || len(b.spread(nil)) != 0 {
		t.Errorf("newBatch(nil) = %+v, want empty", b)
	}
}

func TestChunks(t *testing.T) {
	sizes := []int{5, 5, 20, 1, 1, 1, 1}
	size := func(i int) int { return sizes[i] }
	tests := []struct {
		n, rows, bytes int
		size           func(int) int
		want           [][2]int
	}{
		{0, 3, 0, nil, nil},
		{1, 3, 0, nil, [][2]int{{0, 1}}},
		{7, 3, 0, nil, [][2]int{{0, 3}, {3, 6}, {6, 7}}},
		{6, 3, 0, nil, [][2]int{{0, 3}, {3, 6}}},
		{7, 100, 10, size, [][2]int{{0, 2}, {2, 3}, {3, 7}}},
		{7, 2, 10, size, [][2]int{{0, 2}, {2, 3}, {3, 5}, {5, 7}}},
	}
	for _, tc := range tests {
		got := chunks(tc.n, tc.rows, tc.bytes, tc.size)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("chunks(%d, %d, %d) = %v, want %v", tc.n, tc.rows, tc.bytes, got, tc.want)
		}
	}
}

func TestBatchSort(t *testing.T) {
	reqs := []driver.RefreshRequest{
		{Key: "b", Token: "1"}, {Key: "a", Token: "2"}, {Key: "b", Token: "1"}, {Key: "a", Token: "1"},
	}
	b := newBatch(reqs)
	b.sort()
	want := []driver.RefreshRequest{{Key: "a", Token: "1"}, {Key: "a", Token: "2"}, {Key: "b", Token: "1"}}
	if !reflect.DeepEqual(b.items, want) {
		t.Errorf("sorted items = %v, want %v", b.items, want)
	}
	ea1, ea2, eb1 := errors.New("a1"), errors.New("a2"), errors.New("b1")
	if got, want := b.spread([]error{ea1, ea2, eb1}), []error{eb1, ea2, eb1, ea1}; !reflect.DeepEqual(got, want) {
		t.Errorf("spread after sort = %v, want %v", got, want)
	}
}

// RefreshBatch folds, sorts and chunks the requests, refreshes each chunk
// after its check, and gives every request its lock's error.
func TestRefreshBatch(t *testing.T) {
	reqs := []driver.RefreshRequest{
		{Key: "c", Token: "1", TTL: time.Second},
		{Key: "a", Token: "1", TTL: time.Second},
		{Key: "b", Token: "1", TTL: time.Second},
		{Key: "a", Token: "1", TTL: 2 * time.Second},
		{Key: "d", Token: "1", TTL: time.Second},
	}
	var sent [][]string
	refresh := func(ctx context.Context, items []driver.RefreshRequest, errs []error) {
		var keys []string
		for i, it := range items {
			keys = append(keys, fmt.Sprintf("%s%v", it.Key, it.TTL))
			if it.Key == "b" {
				errs[i] = NotHeld(it.Key)
			}
		}
		sent = append(sent, keys)
	}
	checks := 0
	check := func(ctx context.Context) error {
		if checks++; checks > 3 {
			return driver.ErrClosed // closed before the third chunk
		}
		return nil
	}
	errs := RefreshBatch(t.Context(), reqs, Limits{Rows: 1, Sorted: true}, check, refresh)
	if want := [][]string{{"a2s"}, {"b1s"}}; fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Errorf("statements = %v, want %v", sent, want)
	}
	for i, want := range []error{driver.ErrClosed, nil, driver.ErrNotHeld, nil, driver.ErrClosed} {
		if (want == nil) != (errs[i] == nil) || !errors.Is(errs[i], want) {
			t.Errorf("errs[%d] (%s) = %v, want %v", i, reqs[i].Key, errs[i], want)
		}
	}

	sent = nil
	errs = RefreshBatch(t.Context(), reqs, Limits{Rows: 10, Bytes: 4}, open, refresh)
	if want := [][]string{{"c1s", "a2s"}, {"b1s", "d1s"}}; fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Errorf("statements with a byte bound, unsorted = %v, want %v", sent, want)
	}
	if len(errs) != len(reqs) {
		t.Errorf("%d errors for %d requests", len(errs), len(reqs))
	}

	sent = nil
	closed := func(context.Context) error { return driver.ErrClosed }
	errs = RefreshBatch(t.Context(), reqs, Limits{Rows: 10}, closed, refresh)
	if len(sent) != 0 || len(errs) != len(reqs) || !errors.Is(errs[0], driver.ErrClosed) || !errors.Is(errs[4], driver.ErrClosed) {
		t.Errorf("RefreshBatch on a closed driver sent %v and returned %v, want nothing sent and ErrClosed for each", sent, errs)
	}
}
