package sqlitedlock

import (
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// TestForceReleaseExactHolder checks that ForceRelease's UPDATE frees only
// the holder its read saw: once the key has changed hands (a new token, or
// the same token that took it again with other metadata), it changes
// nothing.
func TestForceReleaseExactHolder(t *testing.T) {
	db, d := openRaw(t)
	ctx := t.Context()
	acquire := func(token, meta string) {
		t.Helper()
		r, err := d.Acquire(ctx, driver.Request{Key: "k", Token: token, TTL: time.Minute, Metadata: meta})
		if err != nil || !r.Acquired {
			t.Fatalf("Acquire(%s) = %+v, %v", token, r, err)
		}
	}
	acquire("t1", "m1")
	seen, err := d.read(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	q := statement(sqlForceRelease, d.table)
	for _, change := range []struct {
		name string
		do   func()
	}{
		{"same token, other metadata", func() { acquire("t1", "m2") }},
		{"another holder", func() {
			if err := d.Release(ctx, "k", "t1"); err != nil {
				t.Fatal(err)
			}
			acquire("t2", "m1")
		}},
	} {
		change.do()
		before := readRow(t, db, "k")
		res, err := db.ExecContext(ctx, q, "k", seen.Token, seen.Fence, seen.Metadata)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != 0 {
			t.Errorf("%s: the UPDATE for the holder seen changed %d rows, want 0", change.name, n)
		}
		if after := readRow(t, db, "k"); after != before {
			t.Errorf("%s: row = %+v, want %+v unchanged", change.name, after, before)
		}
	}
}
