package sqlitedlock

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// openRaw opens the lock table of a new file with a plain *sql.DB.
func openRaw(t *testing.T) (*sql.DB, *sqliteDriver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "locks.db")
	db, err := sql.Open("sqlite", DSN(path, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	d, err := NewDriver(ctx, db, Options{})
	if err != nil {
		t.Fatalf("NewDriver: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return db, d.(*sqliteDriver)
}

type row struct {
	token, meta string
	fence, exp  int64
}

func readRow(t *testing.T, db *sql.DB, key string) row {
	t.Helper()
	var r row
	err := db.QueryRowContext(t.Context(), `SELECT token, fence, expires_at, metadata FROM dlock_locks WHERE key = ?`, key).Scan(&r.token, &r.fence, &r.exp, &r.meta)
	if err != nil {
		t.Fatalf("reading row %q: %v", key, err)
	}
	return r
}

// TestAcquireStatement checks the upsert's contract directly: a row and
// fence 1 for a new key, no row returned and nothing written while another
// owner's lease is live, the same fence for the same token, fence+1 after
// release or expiry.
func TestAcquireStatement(t *testing.T) {
	db, _ := openRaw(t)
	acq := statement(sqlAcquire, DefaultTable)
	run := func(key, token string, ttlMS int64, meta string) (int64, error) {
		var f int64
		err := db.QueryRowContext(t.Context(), acq, key, token, ttlMS, meta).Scan(&f)
		return f, err
	}
	f, err := run("k", "A", 60000, "ma")
	if err != nil || f != 1 {
		t.Fatalf("first acquire = %d, %v; want 1, nil", f, err)
	}
	before := readRow(t, db, "k")
	if _, err := run("k", "B", 60000, "mb"); !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("acquire by another owner: err = %v, want sql.ErrNoRows (no RETURNING row)", err)
	}
	if got := readRow(t, db, "k"); got != before {
		t.Fatalf("row after a refused acquire = %+v, want unchanged %+v", got, before)
	}
	if f, err := run("k", "A", 60000, "ma2"); err != nil || f != 1 {
		t.Fatalf("re-acquire with the same token = %d, %v; want 1, nil", f, err)
	}
	rel := statement(sqlRelease, DefaultTable)
	if r, err := db.ExecContext(t.Context(), rel, "k", "B"); err != nil {
		t.Fatal(err)
	} else if n, _ := r.RowsAffected(); n != 0 {
		t.Fatalf("release by another owner changed %d rows, want 0", n)
	}
	if r, err := db.ExecContext(t.Context(), rel, "k", "A"); err != nil {
		t.Fatal(err)
	} else if n, _ := r.RowsAffected(); n != 1 {
		t.Fatalf("release by the owner changed %d rows, want 1", n)
	}
	if got := readRow(t, db, "k"); got.token != "" || got.fence != 1 || got.exp != 0 {
		t.Fatalf("row after release = %+v, want free with fence 1", got)
	}
	if f, err := run("k", "A", 1, "ma"); err != nil || f != 2 {
		t.Fatalf("acquire after release, same token = %d, %v; want 2, nil", f, err)
	}
	time.Sleep(20 * time.Millisecond) // let the 1 ms lease run out
	if f, err := run("k", "A", 60000, "ma"); err != nil || f != 3 {
		t.Fatalf("acquire after expiry, same token = %d, %v; want 3 (a new grant), nil", f, err)
	}
	if f, err := run("k", "C", 60000, "mc"); !errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("acquire by another owner = %d, %v; want sql.ErrNoRows", f, err)
	}
}

// TestClock checks that the statements' clock is the engine's, in
// milliseconds, and agrees with this host's clock.
func TestClock(t *testing.T) {
	db, _ := openRaw(t)
	var ms int64
	if err := db.QueryRowContext(t.Context(), "SELECT "+nowMS).Scan(&ms); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(time.UnixMilli(ms)); d < -time.Second || d > time.Second {
		t.Fatalf("engine clock is %v away from the host clock, want within 1s", d)
	}
}

func TestVersionAtLeast(t *testing.T) {
	tests := []struct {
		have, want string
		ok         bool
	}{
		{"3.35.0", "3.35.0", true},
		{"3.54.1", "3.35.0", true},
		{"3.34.9", "3.35.0", false},
		{"4.0", "3.35.0", true},
		{"3.35", "3.35.0", true},
		{"2.99.99", "3.35.0", false},
	}
	for _, tc := range tests {
		if got := versionAtLeast(tc.have, tc.want); got != tc.ok {
			t.Errorf("versionAtLeast(%q, %q) = %v, want %v", tc.have, tc.want, got, tc.ok)
		}
	}
}

func TestMillis(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want int64
	}{
		{10 * time.Millisecond, 10},
		{10*time.Millisecond + 1, 11},
		{time.Second, 1000},
		{1, 1},
	}
	for _, tc := range tests {
		if got := millis(tc.in); got != tc.want {
			t.Errorf("millis(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
