package sqllease

import (
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
)

func TestRowInfo(t *testing.T) {
	tests := []struct {
		row  Row
		want driver.Info
	}{
		{Row{}, driver.Info{Waiters: -1}},
		{Row{Fence: 3, TTL: 0, Metadata: "m"}, driver.Info{Fence: 3, Waiters: -1}},
		{Row{Fence: -1}, driver.Info{Waiters: -1}},
		{Row{Held: true, Token: "t", Fence: 4, TTL: time.Second, Metadata: "m"}, driver.Info{Held: true, Fence: 4, TTL: time.Second, Metadata: "m", Waiters: -1}},
	}
	for _, tc := range tests {
		if got := tc.row.Info(); got != tc.want {
			t.Errorf("%+v.Info() = %+v, want %+v", tc.row, got, tc.want)
		}
	}
}

// ForceRelease reads until it frees the holder it saw, at most ForceTries
// rounds.
func TestForceRelease(t *testing.T) {
	held := Row{Held: true, Token: "t", Fence: 2, TTL: time.Second, Metadata: "m"}
	reads, frees := 0, 0
	read := func() (Row, error) { reads++; return held, nil }
	freeAt := func(round int) func(Row) (bool, error) {
		return func(r Row) (bool, error) {
			if r != held {
				t.Errorf("free(%+v), want the row read", r)
			}
			frees++
			return frees == round, nil
		}
	}
	in, err := ForceRelease("x", "k", read, freeAt(2))
	if want := held.Info(); err != nil || in != want || reads != 2 || frees != 2 {
		t.Errorf("ForceRelease = %+v, %v after %d reads and %d frees, want %+v after 2 each", in, err, reads, frees, want)
	}

	reads, frees = 0, 0
	_, err = ForceRelease("sqlite db", "k", read, freeAt(0))
	if err == nil || !strings.HasPrefix(err.Error(), `sqlite db: force release of "k": the key changed hands 5 times`) || frees != ForceTries {
		t.Errorf("ForceRelease of a key that keeps changing hands = %v after %d frees, want the error after %d", err, frees, ForceTries)
	}

	free := Row{Fence: 7}
	in, err = ForceRelease("x", "k", func() (Row, error) { return free, nil }, func(Row) (bool, error) {
		t.Error("free called for a key not held")
		return false, nil
	})
	if err != nil || in != free.Info() {
		t.Errorf("ForceRelease of a free key = %+v, %v, want %+v", in, err, free.Info())
	}

	boom := errors.New("boom")
	if _, err := ForceRelease("x", "k", read, func(Row) (bool, error) { return false, boom }); err != boom {
		t.Errorf("ForceRelease with a failing free = %v, want its error", err)
	}
	if _, err := ForceRelease("x", "k", func() (Row, error) { return Row{}, boom }, nil); err != boom {
		t.Errorf("ForceRelease with a failing read = %v, want its error", err)
	}
}

func TestFound(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		err   error
		found bool
		want  error
	}{{nil, true, nil}, {sql.ErrNoRows, false, nil}, {boom, false, boom}} {
		if found, err := Found(tc.err, sql.ErrNoRows); found != tc.found || err != tc.want {
			t.Errorf("Found(%v) = %v, %v, want %v, %v", tc.err, found, err, tc.found, tc.want)
		}
	}
}

// rows is a Rows of n rows whose Scan fails at row fail (from 1; 0: never).
type rows struct{ n, at, fail int }

func (r *rows) Next() bool { r.at++; return r.at <= r.n }
func (r *rows) Err() error { return nil }
func (r *rows) Scan(dest ...any) error {
	if r.at == r.fail {
		return errors.New("scan failed")
	}
	*dest[0].(*int) = r.at
	return nil
}

func TestScanRows(t *testing.T) {
	var got []int
	each := func(scan func(...any) error) error {
		var i int
		if err := scan(&i); err != nil {
			return err
		}
		got = append(got, i)
		return nil
	}
	if err := ScanRows(&rows{n: 3}, each); err != nil || len(got) != 3 {
		t.Errorf("ScanRows = %v, read %v, want 3 rows", err, got)
	}
	got = nil
	if err := ScanRows(&rows{n: 3, fail: 2}, each); err == nil || len(got) != 1 {
		t.Errorf("ScanRows failing at row 2 = %v, read %v, want the error after 1 row", err, got)
	}
	boom := errors.New("boom")
	if err := QueryRows(nil, boom, each); err != boom {
		t.Errorf("QueryRows of a failed query = %v, want its error", err)
	}
}
