package sqlitedlock_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/sqlitedlock"
)

// TestAutoRefreshBatched holds many locks with a short TTL on one client
// and checks that they are all kept alive by a few batched statements per
// refresh interval, not one statement per lock.
func TestAutoRefreshBatched(t *testing.T) {
	ctx := testCtx(t)
	d, err := sqlitedlock.OpenDriver(ctx, filepath.Join(t.TempDir(), "locks.db"), sqlitedlock.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cd := &drivertest.RefreshCounter{Locker: d}
	c := dlock.NewClient(cd)
	defer c.Close()
	// A TTL of 1 s, not shorter: the engine is Go code, which the race
	// detector slows many times (a batch of 200 then takes 30-160 ms), and
	// on a busy machine one statement has been seen to take 0.4 s, longer
	// than a 600 ms lease leaves after its refresh interval.
	const (
		n    = 200
		ttl  = time.Second
		hold = 3 * time.Second
	)
	locks := drivertest.HoldMany(ctx, t, c, "auto-", n, ttl)
	// Let the refresh schedule settle: while the locks were being taken
	// each refresh could find only the few taken so far due.
	time.Sleep(ttl)
	stmts0, batches0, locks0 := sqlitedlock.BatchStatements(d), cd.Batches.Load(), cd.Locks.Load()
	time.Sleep(hold - ttl)
	drivertest.CheckHeld(t, locks, fmt.Sprint("after ", hold))
	single, batches, refreshed := cd.Single.Load(), cd.Batches.Load()-batches0, cd.Locks.Load()-locks0
	stmts := sqlitedlock.BatchStatements(d) - stmts0
	t.Logf("%d locks, TTL %v, over %v: %d RefreshBatch calls refreshed %d locks in %d statements (%d failed results in all); %d single Refresh calls in all",
		n, ttl, hold-ttl, batches, refreshed, stmts, cd.Failed.Load(), single)
	if single != 0 {
		t.Errorf("single Refresh calls = %d, want 0", single)
	}
	// One statement per lock per TTL/3 would be 1200 here; a batch per
	// interval is 6.
	if want := int64(n * 4); refreshed < want {
		t.Errorf("locks refreshed = %d, want at least %d", refreshed, want)
	}
	if batches == 0 || batches > 50 || stmts > 50 {
		t.Errorf("RefreshBatch calls = %d, statements = %d; want 1..50 of each", batches, stmts)
	}
	for i, l := range locks {
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock %d: %v", i, err)
		}
	}
}

func TestRefreshBatch(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	modes := []struct {
		name string
		open func() (driver.Locker, error)
	}{
		{"file", func() (driver.Locker, error) {
			return sqlitedlock.OpenDriver(ctx, filepath.Join(dir, "file.db"), sqlitedlock.Config{})
		}},
		{"memory", func() (driver.Locker, error) {
			return sqlitedlock.OpenMemory(ctx, "batch", sqlitedlock.Config{})
		}},
		{"application db", func() (driver.Locker, error) {
			db, err := sql.Open("sqlite", sqlitedlock.DSN(filepath.Join(dir, "app.db"), 0))
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { db.Close() })
			return sqlitedlock.NewDriver(ctx, db, sqlitedlock.Config{Table: "app_locks"})
		}},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			d, err := m.open()
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			testRefreshBatch(t, ctx, d)
		})
	}

	t.Run("database closed", func(t *testing.T) {
		db, err := sql.Open("sqlite", sqlitedlock.DSN(filepath.Join(dir, "closed.db"), 0))
		if err != nil {
			t.Fatal(err)
		}
		d, err := sqlitedlock.NewDriver(ctx, db, sqlitedlock.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if res, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		db.Close()
		errs := d.(driver.BatchRefresher).RefreshBatch(ctx, []driver.RefreshRequest{
			{Key: "k", Token: "t", TTL: time.Minute}, {Key: "other", Token: "t", TTL: time.Minute},
		})
		for i, err := range errs {
			if !errors.Is(err, driver.ErrUnavailable) || err != errs[0] {
				t.Errorf("result %d = %v, want the statement's ErrUnavailable for every request", i, err)
			}
		}
	})

	// Another connection holds the file's write lock, as another process
	// would: the batch waits for it within its context, never showing
	// "database is locked".
	t.Run("busy file", func(t *testing.T) {
		path := filepath.Join(dir, "busy.db")
		d, err := sqlitedlock.OpenDriver(ctx, path, sqlitedlock.Config{BusyTimeout: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if res, err := d.Acquire(ctx, driver.Request{Key: "k", Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		blocker, err := sql.Open("sqlite", sqlitedlock.DSN(path, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer blocker.Close()
		conn, err := blocker.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		reqs := []driver.RefreshRequest{{Key: "k", Token: "t", TTL: time.Minute}, {Key: "other", Token: "t", TTL: time.Minute}}
		br := d.(driver.BatchRefresher)

		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		errs := br.RefreshBatch(sctx, reqs)
		cancel()
		for i, err := range errs {
			if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, driver.ErrNotHeld) {
				t.Errorf("busy file, request %d: got %v, want DeadlineExceeded", i, err)
			}
			checkNoBusyText(t, err)
		}

		go func() {
			time.Sleep(300 * time.Millisecond)
			_, _ = conn.ExecContext(context.Background(), "COMMIT")
		}()
		errs = br.RefreshBatch(ctx, reqs)
		if errs[0] != nil || !errors.Is(errs[1], driver.ErrNotHeld) {
			checkNoBusyText(t, errs[0])
			t.Errorf("results while the file frees up = %v, want [nil, ErrNotHeld]", errs)
		}
	})
}

// testRefreshBatch checks RefreshBatch's per-request results on a mix of
// held, expired, stolen, released, unknown and duplicate keys, and on a
// batch larger than one statement takes.
func testRefreshBatch(t *testing.T, ctx context.Context, d driver.Locker) {
	br := d.(driver.BatchRefresher)
	stmts := func() int64 { return sqlitedlock.BatchStatements(d) }
	acquire := func(key, token string, ttl time.Duration) uint64 {
		t.Helper()
		res, err := d.Acquire(ctx, driver.Request{Key: key, Token: token, TTL: ttl})
		if err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v", key, res, err)
		}
		return res.Fence
	}
	odd, long, longTok := "odd\x00'\\\"`,é\n", strings.Repeat("L", 1024), strings.Repeat("T", 1024)
	fences := map[string]uint64{
		"held":     acquire("held", "tok-held", 5*time.Second),
		odd:        acquire(odd, "tok-odd\x00,'\\", 5*time.Second),
		"stolen":   acquire("stolen", "tok-thief", 5*time.Second),
		"dup":      acquire("dup", "tok-dup", 5*time.Second),
		"expired":  acquire("expired", "tok-expired", 20*time.Millisecond),
		"released": acquire("released", "tok-released", 5*time.Second),
		long:       acquire(long, longTok, 5*time.Second),
	}
	if err := d.Release(ctx, "released", "tok-released"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // past "expired"'s lease

	cases := []struct {
		key, token string
		ttl        time.Duration
		held       bool
	}{
		{"held", "tok-held", time.Minute, true},
		{"expired", "tok-expired", time.Minute, false},
		{"stolen", "tok-victim", time.Minute, false},
		{"dup", "tok-other", time.Minute, false},
		{"dup", "tok-dup", time.Minute, true},
		{odd, "tok-odd\x00,'\\", 2 * time.Minute, true},
		{"released", "tok-released", time.Minute, false},
		{"never", "tok-never", time.Minute, false},
		{"dup", "tok-dup", 2 * time.Minute, true},
		{long, longTok, time.Minute, true},
		{"held", "tok-held", time.Minute, true},
		{"odd", "tok-odd", time.Minute, false}, // a prefix of a held key
	}
	reqs := make([]driver.RefreshRequest, len(cases))
	for i, c := range cases {
		reqs[i] = driver.RefreshRequest{Key: c.key, Token: c.token, TTL: c.ttl}
	}
	before := stmts()
	errs := br.RefreshBatch(ctx, reqs)
	if got := stmts() - before; got != 1 {
		t.Errorf("statements for a batch of %d = %d, want 1", len(reqs), got)
	}
	if len(errs) != len(cases) {
		t.Fatalf("RefreshBatch returned %d results for %d requests", len(errs), len(cases))
	}
	for i, c := range cases {
		if c.held && errs[i] != nil {
			t.Errorf("request %d (%q, %q): got %v, want nil", i, c.key, c.token, errs[i])
		}
		if !c.held && !errors.Is(errs[i], driver.ErrNotHeld) {
			t.Errorf("request %d (%q, %q): got %v, want ErrNotHeld", i, c.key, c.token, errs[i])
		}
	}
	// The leases moved to the longest TTL asked for each (key, token); the
	// fences did not move; the thief's lease was left alone.
	wantTTL := map[string]time.Duration{
		"held": time.Minute, "dup": 2 * time.Minute, odd: 2 * time.Minute,
		long: time.Minute, "stolen": 5 * time.Second,
	}
	for key, want := range wantTTL {
		in, err := d.Inspect(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if !in.Held || in.Fence != fences[key] || in.TTL > want || in.TTL < want-10*time.Second {
			t.Errorf("Inspect(%q) = %+v, want held, fence %d, TTL about %v", key, in, fences[key], want)
		}
	}

	// A batch larger than one statement takes: results stay in order.
	const big = 1200
	rows := sqlitedlock.BatchRows
	heldAt := map[int]bool{0: true, rows - 1: true, rows: true, big - 1: true}
	reqs = make([]driver.RefreshRequest, big)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: fmt.Sprint("big-", i), Token: "tok-big", TTL: time.Minute}
		if heldAt[i] {
			acquire(reqs[i].Key, reqs[i].Token, 5*time.Second)
		}
	}
	before = stmts()
	errs = br.RefreshBatch(ctx, reqs)
	if got, want := stmts()-before, int64((big+rows-1)/rows); got != want {
		t.Errorf("statements for a batch of %d = %d, want %d", big, got, want)
	}
	for i, err := range errs {
		if heldAt[i] && err != nil || !heldAt[i] && !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("big batch, request %d: got %v, want held=%v", i, err, heldAt[i])
		}
	}

	// An ended context and a closed driver fail every request, sending
	// nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	before = stmts()
	for i, err := range br.RefreshBatch(cctx, reqs[:3]) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled context, request %d: got %v, want context.Canceled", i, err)
		}
	}
	if got := stmts() - before; got != 0 {
		t.Errorf("statements with a cancelled context = %d, want 0", got)
	}
	if got := br.RefreshBatch(ctx, nil); len(got) != 0 {
		t.Errorf("RefreshBatch(nil) = %v, want no results", got)
	}
	d.Close()
	for i, err := range br.RefreshBatch(ctx, reqs[:3]) {
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("closed driver, request %d: got %v, want ErrClosed", i, err)
		}
	}
}
