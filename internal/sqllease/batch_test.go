package sqllease

import (
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
	b := NewBatch(reqs)
	want := []driver.RefreshRequest{
		{Key: "a", Token: "1", TTL: 3 * time.Second},
		{Key: "b", Token: "1", TTL: time.Second},
		{Key: "a", Token: "2", TTL: time.Second},
	}
	if !reflect.DeepEqual(b.Items, want) {
		t.Errorf("Items = %v, want %v", b.Items, want)
	}
	e0, e2 := errors.New("e0"), errors.New("e2")
	got := b.Spread([]error{e0, nil, e2})
	if wantErrs := []error{e0, nil, e0, e2, e0}; !reflect.DeepEqual(got, wantErrs) {
		t.Errorf("Spread = %v, want %v", got, wantErrs)
	}

	b = NewBatch(reqs[:2])
	if !reflect.DeepEqual(b.Items, reqs[:2]) {
		t.Errorf("NewBatch of distinct requests: Items = %v, want them unchanged", b.Items)
	}
	if b = NewBatch(nil); len(b.Items) != 0 || len(b.Spread(nil)) != 0 {
		t.Errorf("NewBatch(nil) = %+v, want empty", b)
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
		got := Chunks(tc.n, tc.rows, tc.bytes, tc.size)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Chunks(%d, %d, %d) = %v, want %v", tc.n, tc.rows, tc.bytes, got, tc.want)
		}
	}
}
