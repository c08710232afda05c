package mysqldlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// base returns the *myDriver under the tests' wrappers.
func base(d driver.Locker) *myDriver {
	switch v := d.(type) {
	case *myDriver:
		return v
	case closeAlso:
		return v.myDriver
	}
	panic(fmt.Sprintf("unexpected driver %T", d))
}

// TestAutoRefreshBatched holds many locks with a short TTL on one client
// and checks that they are all kept alive by a few batched statements per
// refresh interval, not one round trip per lock.
func TestAutoRefreshBatched(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, viaDB := range []bool{false, true} {
		name := "url"
		if viaDB {
			name = "database_sql"
		}
		t.Run(name, func(t *testing.T) {
			d, err := (&harness{srv: srv, viaDB: viaDB}).MakeDriver(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cd := &drivertest.RefreshCounter{Locker: d}
			c := dlock.NewClient(cd)
			defer c.Close()
			const (
				n    = 200
				ttl  = 600 * time.Millisecond
				hold = 2 * time.Second
			)
			locks := drivertest.HoldMany(ctx, t, c, "auto-"+name+"-", n, ttl)
			// Let the refresh schedule settle: while the locks were being
			// taken each refresh could find only the few taken so far due.
			time.Sleep(ttl)
			stmts0, batches0, locks0 := base(d).batchStatements.Load(), cd.Batches.Load(), cd.Locks.Load()
			time.Sleep(hold - ttl)
			drivertest.CheckHeld(t, locks, fmt.Sprint("after ", hold))
			single, batches, refreshed := cd.Single.Load(), cd.Batches.Load()-batches0, cd.Locks.Load()-locks0
			stmts := base(d).batchStatements.Load() - stmts0
			t.Logf("%d locks, TTL %v, over %v: %d RefreshBatch calls refreshed %d locks in %d statements (%d failed results in all); %d single Refresh calls in all",
				n, ttl, hold-ttl, batches, refreshed, stmts, cd.Failed.Load(), single)
			if single != 0 {
				t.Errorf("single Refresh calls = %d, want 0", single)
			}
			// One round trip per lock per TTL/3 would be 1400 here; a
			// batch per interval is 7.
			if want := int64(n * 5); refreshed < want {
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
		})
	}
}

func TestRefreshBatch(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	t.Run("url", func(t *testing.T) {
		d, err := (&harness{srv: srv}).MakeDriver(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		testRefreshBatch(t, ctx, d, "batch-url-")
	})
	// The application's own handle, with the settings that change how
	// statements are sent and what they report.
	sessions := []struct {
		name string
		edit func(*mysql.Config)
	}{
		{"defaults (server-side prepare)", func(*mysql.Config) {}},
		{"client found rows", func(c *mysql.Config) { c.ClientFoundRows = true }},
		{"ansi, no backslash escapes", func(c *mysql.Config) {
			c.InterpolateParams = true
			c.Params = map[string]string{"sql_mode": "'ANSI,NO_BACKSLASH_ESCAPES'"}
		}},
	}
	for i, s := range sessions {
		t.Run(s.name, func(t *testing.T) {
			cfg := srv.Config()
			s.edit(cfg)
			db, err := openDB(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			d, err := NewDriver(ctx, db, Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			testRefreshBatch(t, ctx, d, fmt.Sprintf("batch-db%d-", i))
		})
	}

	t.Run("server unreachable", func(t *testing.T) {
		proxy := testserver.StartProxy(t, srv.Addr())
		u := strings.Replace(srv.URL(), srv.Addr(), proxy.Addr(), 1)
		pu, err := driver.ParseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		d, err := openURL(ctx, pu)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		key := "batch-unreachable"
		if res, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		proxy.Blackhole(true)
		defer proxy.Blackhole(false)
		bctx, bcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer bcancel()
		errs := d.(driver.BatchRefresher).RefreshBatch(bctx, []driver.RefreshRequest{
			{Key: key, Token: "t", TTL: time.Minute}, {Key: key + "-other", Token: "t", TTL: time.Minute},
		})
		for i, err := range errs {
			if err == nil || errors.Is(err, driver.ErrNotHeld) || err != errs[0] {
				t.Errorf("result %d = %v, want the statement's error for every request", i, err)
			}
		}
		if !errors.Is(errs[0], context.DeadlineExceeded) {
			t.Errorf("error = %v, want it to wrap context.DeadlineExceeded", errs[0])
		}
	})
}

// testRefreshBatch checks RefreshBatch's per-request results on a mix of
// held, expired, stolen, released, unknown and duplicate keys, and on a
// batch larger than one statement takes.
func testRefreshBatch(t *testing.T, ctx context.Context, d driver.Locker, prefix string) {
	br := d.(driver.BatchRefresher)
	stmts := &base(d).batchStatements
	acquire := func(key, token string, ttl time.Duration) uint64 {
		t.Helper()
		res, err := d.Acquire(ctx, driver.Request{Key: key, Token: token, TTL: ttl})
		if err != nil || !res.Acquired {
			t.Fatalf("Acquire(%q) = %+v, %v", key, res, err)
		}
		return res.Fence
	}
	k := func(s string) string { return prefix + s }
	odd, long, longTok := k("odd\x00'\\\"`,é\n"), k(strings.Repeat("L", 900)), strings.Repeat("T", 1024)
	fences := map[string]uint64{
		k("held"):     acquire(k("held"), "tok-held", 5*time.Second),
		odd:           acquire(odd, "tok-odd\x00,'\\", 5*time.Second),
		k("stolen"):   acquire(k("stolen"), "tok-thief", 5*time.Second),
		k("dup"):      acquire(k("dup"), "tok-dup", 5*time.Second),
		k("expired"):  acquire(k("expired"), "tok-expired", 20*time.Millisecond),
		k("released"): acquire(k("released"), "tok-released", 5*time.Second),
		long:          acquire(long, longTok, 5*time.Second),
	}
	if err := d.Release(ctx, k("released"), "tok-released"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond) // past "expired"'s lease

	// All held: one statement.
	before := stmts.Load()
	errs := br.RefreshBatch(ctx, []driver.RefreshRequest{
		{Key: k("held"), Token: "tok-held", TTL: 10 * time.Second},
		{Key: odd, Token: "tok-odd\x00,'\\", TTL: 10 * time.Second},
		{Key: long, Token: longTok, TTL: 10 * time.Second},
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("all-held batch, request %d: %v", i, err)
		}
	}
	if got := stmts.Load() - before; got != 1 {
		t.Errorf("statements for an all-held batch = %d, want 1", got)
	}

	cases := []struct {
		key, token string
		ttl        time.Duration
		held       bool
	}{
		{k("held"), "tok-held", time.Minute, true},
		{k("expired"), "tok-expired", time.Minute, false},
		{k("stolen"), "tok-victim", time.Minute, false},
		{k("dup"), "tok-other", time.Minute, false},
		{k("dup"), "tok-dup", time.Minute, true},
		{odd, "tok-odd\x00,'\\", 2 * time.Minute, true},
		{k("released"), "tok-released", time.Minute, false},
		{k("never"), "tok-never", time.Minute, false},
		{k("dup"), "tok-dup", 2 * time.Minute, true},
		{long, longTok, time.Minute, true},
		{k("held"), "tok-held", time.Minute, true},
	}
	reqs := make([]driver.RefreshRequest, len(cases))
	for i, c := range cases {
		reqs[i] = driver.RefreshRequest{Key: c.key, Token: c.token, TTL: c.ttl}
	}
	before = stmts.Load()
	errs = br.RefreshBatch(ctx, reqs)
	// The UPDATE, then the SELECT that tells which locks it refreshed.
	if got := stmts.Load() - before; got != 2 {
		t.Errorf("statements for a mixed batch of %d = %d, want 2", len(reqs), got)
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
		k("held"): time.Minute, k("dup"): 2 * time.Minute, odd: 2 * time.Minute,
		long: time.Minute, k("stolen"): 5 * time.Second,
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
	heldAt := map[int]bool{0: true, batchRows - 1: true, batchRows: true, big - 1: true}
	reqs = make([]driver.RefreshRequest, big)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: k(fmt.Sprintf("big-%04d", i)), Token: "tok-big", TTL: time.Minute}
		if heldAt[i] {
			acquire(reqs[i].Key, reqs[i].Token, 5*time.Second)
		}
	}
	before = stmts.Load()
	errs = br.RefreshBatch(ctx, reqs)
	if got, want := stmts.Load()-before, int64(2*((big+batchRows-1)/batchRows)); got != want {
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
	before = stmts.Load()
	for i, err := range br.RefreshBatch(cctx, reqs[:3]) {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled context, request %d: got %v, want context.Canceled", i, err)
		}
	}
	if got := stmts.Load() - before; got != 0 {
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
