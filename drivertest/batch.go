package drivertest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// RoundTripCounter is an optional Harness method set for
// RunBatchRefresherTests: it lets the suite check what one RefreshBatch call
// costs the backend, in the unit the backend pays for (a statement for SQL
// drivers, a request the server counts for ZooKeeper, a pipeline per node
// for Redis). Without it the suite counts only the RefreshBatch calls a
// Client makes.
type RoundTripCounter interface {
	// RoundTrips returns how many round trips d, a driver this harness
	// made, has cost the backend so far. The suite reads it right before
	// and right after one RefreshBatch call on d, with no other call on d
	// in between; a backend-wide count is fine as long as only noise of a
	// known size (a ping, the count's own request) comes in between and
	// MaxBatchRoundTrips allows for it.
	RoundTrips(d driver.Locker) int64
	// MaxBatchRoundTrips returns the most round trips one RefreshBatch call
	// of n locks that are all held may cost: one per server or node, or one
	// per statement of a bounded number of rows. For n = 0 it is the noise
	// a batch that sends nothing (its context ended) may still see counted,
	// usually 0.
	MaxBatchRoundTrips(n int) int64
}

// RunBatchRefresherTests checks a driver's driver.BatchRefresher against
// the contract RefreshBatch shares with Refresh, over drivers the harness
// makes: one result per request, in order, each what Refresh would have
// said (nil for a held lock, an error wrapping ErrNotHeld for a lock
// released, expired, taken over by another owner or never held, for
// another token of a held key and for a prefix of a held key), the owner's
// leases extended to the TTL each request asks for, with the fence
// unchanged (the longest of a lock's TTLs in one batch with LongestTTLer),
// and another owner's lock and lease left as they were; a batch
// with some locks lost among many held ones loses exactly those; a batch
// larger than one round trip carries (BatchLimiter) keeps its results in
// order; a batch costs a few round trips, not one per lock, and none with
// an ended context (RoundTripCounter, when the harness has it); a Client
// holding many locks
// refreshes them all in a few RefreshBatch calls per refresh interval, each
// within the round trips of one batch, and keeps them for several
// intervals; an ended context fails every request
// and leaves the locks held; an empty batch has no results; a closed driver
// fails every request with ErrClosed. It skips, saying so, when the driver
// does not implement driver.BatchRefresher. Backend-specific parts (fault
// injection, limits of one transaction or statement, cached scripts) stay in
// the driver's own tests.
func RunBatchRefresherTests(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	tests := []struct {
		name string
		f    func(*testing.T, *batchSuite)
	}{
		{"PerRequestResults", testBatchPerRequest},
		{"LostAmongMany", testBatchLostAmongMany},
		{"LargerThanOneRoundTrip", testBatchLarge},
		{"ClientRefreshesInBatches", testBatchThroughClient},
		{"EndedContext", testBatchEndedContext},
		{"Closed", testBatchClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			su := newSuite(t, newHarness, 2*time.Minute)
			s := &batchSuite{t: t, ctx: su.ctx, h: su.h, prefix: su.prefix}
			if _, ok := s.driver().(driver.BatchRefresher); !ok {
				t.Skipf("%T does not implement driver.BatchRefresher", s.driver())
			}
			tt.f(t, s)
		})
	}
}

type batchSuite struct {
	t      *testing.T
	ctx    context.Context
	h      Harness
	prefix string
}

// driver makes a new driver, closed when the test ends.
func (s *batchSuite) driver() driver.Locker {
	s.t.Helper()
	d, err := s.h.MakeDriver(s.ctx)
	if err != nil {
		s.t.Fatalf("MakeDriver: %v", err)
	}
	s.t.Cleanup(func() { _ = d.Close() })
	return d
}

func (s *batchSuite) key(name string) string { return s.prefix + name }

// ttls returns a TTL the locks are taken with and a longer one within the
// driver's bounds (from 20 s and 40 s down to the declared MaxTTL).
func (s *batchSuite) ttls(d driver.Locker) (base, longer time.Duration) {
	base, longer = 20*time.Second, 40*time.Second
	if max := d.Capabilities().MaxTTL; max > 0 && longer > max {
		base, longer = max/2, max
	}
	return base, longer
}

func (s *batchSuite) shortTTL() time.Duration {
	if st, ok := s.h.(ShortTTLer); ok {
		return st.ShortTTL()
	}
	return 300 * time.Millisecond
}

func (s *batchSuite) acquire(d driver.Locker, key, token string, ttl time.Duration) uint64 {
	s.t.Helper()
	res, err := d.Acquire(s.ctx, driver.Request{Key: key, Token: token, TTL: ttl})
	if err != nil || !res.Acquired {
		s.t.Fatalf("Acquire(%q, %q) = %+v, %v; want acquired", key, token, res, err)
	}
	return res.Fence
}

// batch calls RefreshBatch on d, checks it returned one result per request
// and, with a RoundTripCounter harness, returns the round trips it cost
// (-1 without one).
func (s *batchSuite) batch(ctx context.Context, d driver.Locker, reqs []driver.RefreshRequest) ([]error, int64) {
	s.t.Helper()
	rt, counted := s.h.(RoundTripCounter)
	var before int64
	if counted {
		before = quiet(rt, d)
	}
	errs := d.(driver.BatchRefresher).RefreshBatch(ctx, reqs)
	cost := int64(-1)
	if counted {
		cost = rt.RoundTrips(d) - before
	}
	if len(errs) != len(reqs) {
		s.t.Fatalf("RefreshBatch returned %d results for %d requests", len(errs), len(reqs))
	}
	return errs, cost
}

// quiet waits, up to two seconds, until d's background traffic (the late
// fence raises of Redlock's acquisitions, say) has ended: no round trip for
// 50 ms. It returns the round trips counted then, so that a batch's count
// is its own.
func quiet(rt RoundTripCounter, d driver.Locker) int64 {
	n := rt.RoundTrips(d)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
		m := rt.RoundTrips(d)
		if m == n {
			break
		}
		n = m
	}
	return n
}

// wantResult fails the test unless err is nil (held) or wraps ErrNotHeld.
func wantResult(t *testing.T, what string, err error, held bool) {
	t.Helper()
	switch {
	case held && err != nil:
		t.Errorf("%s: got %v, want nil", what, err)
	case !held && !errors.Is(err, driver.ErrNotHeld):
		t.Errorf("%s: got %v, want ErrNotHeld", what, err)
	}
}

// testBatchPerRequest: one batch over locks in every state answers each as
// Refresh would, in order, and changes only what it should.
func testBatchPerRequest(t *testing.T, s *batchSuite) {
	d, other := s.driver(), s.driver()
	base, longer := s.ttls(d)
	k := s.key
	odd := k("odd\x00'\\\"`,é\n%2F/ß")
	long := k(strings.Repeat("L", 200))
	longTok := strings.Repeat("T", 256)
	fences := map[string]uint64{
		k("held"):   s.acquire(d, k("held"), "tok-held", base),
		k("held2"):  s.acquire(d, k("held2"), "tok-held2", base),
		k("dup"):    s.acquire(d, k("dup"), "tok-dup", base),
		k("dup2"):   s.acquire(d, k("dup2"), "tok-dup2", base),
		k("longer"): s.acquire(d, k("longer"), "tok-longer", base),
		odd:         s.acquire(d, odd, "tok-odd\x00,'\\", base),
		long:        s.acquire(d, long, longTok, base),
	}
	s.acquire(d, k("released"), "tok-released", base)
	if err := d.Release(s.ctx, k("released"), "tok-released"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// Taken over: released by its owner's driver, then taken by another.
	s.acquire(d, k("taken"), "tok-taken", base)
	if err := d.Release(s.ctx, k("taken"), "tok-taken"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	fences[k("taken")] = s.acquire(other, k("taken"), "tok-thief", base)
	fences[k("foreign")] = s.acquire(other, k("foreign"), "tok-foreign", base)
	short := s.shortTTL()
	s.acquire(d, k("expired"), "tok-expired", short)
	time.Sleep(3*short + 500*time.Millisecond) // past "expired"'s lease on any clock

	cases := []struct {
		key, token string
		ttl        time.Duration
		held       bool
	}{
		{k("held"), "tok-held", base, true},
		{k("expired"), "tok-expired", base, false},
		{k("taken"), "tok-taken", longer, false},     // another owner has it now
		{k("hel"), "tok-held", base, false},          // a prefix of a held key
		{k("foreign"), "tok-held", base, false},      // held by another owner
		{k("held"), "tok-other", base, false},        // another token of a held key
		{k("dup"), "tok-other", base, false},         // another token of a held key
		{k("dup"), "tok-dup", base, true},            // the same lock twice in one batch
		{k("dup2"), "tok-dup2", longer, true},        // the same lock with two TTLs
		{odd, "tok-odd\x00,'\\", base, true},         // bytes that need quoting
		{k("released"), "tok-released", base, false}, // freed by its owner
		{k("never"), "tok-never", base, false},
		{k("held2"), "tok-held2", base, true},
		{k("longer"), "tok-longer", longer, true}, // a longer TTL than it was taken with
		{long, longTok, base, true},
		{k("dup"), "tok-dup", base, true},
		{k("dup2"), "tok-dup2", base, true},
		{k("held"), "tok-held", base, true},
	}
	reqs := make([]driver.RefreshRequest, len(cases))
	for i, c := range cases {
		reqs[i] = driver.RefreshRequest{Key: c.key, Token: c.token, TTL: c.ttl}
	}
	errs, _ := s.batch(s.ctx, d, reqs)
	for i, c := range cases {
		wantResult(t, fmt.Sprintf("request %d (%q, %q)", i, c.key, c.token), errs[i], c.held)
	}

	// The owner's locks are held with their fences; the one refreshed with
	// a longer TTL has more left than it was taken with.
	for key, fence := range fences {
		in, err := d.Inspect(s.ctx, key)
		if err != nil {
			t.Fatalf("Inspect(%q): %v", key, err)
		}
		if !in.Held || in.Fence != fence {
			t.Errorf("Inspect(%q) after the batch = %+v, want held with fence %d", key, in, fence)
		}
	}
	if in, err := d.Inspect(s.ctx, k("longer")); err != nil || in.TTL <= base+(longer-base)/4 {
		t.Errorf("Inspect(longer) after a refresh to %v = %+v, %v; want more than %v left", longer, in, err, base+(longer-base)/4)
	}
	if lt, ok := s.h.(LongestTTLer); ok && lt.LongestTTL() {
		if in, err := d.Inspect(s.ctx, k("dup2")); err != nil || in.TTL <= base+(longer-base)/4 {
			t.Errorf("Inspect(dup2) after a refresh to %v then %v in one batch = %+v, %v; want more than %v left", longer, base, in, err, base+(longer-base)/4)
		}
	}
	// The other owner's lease was not extended by our request.
	if in, err := d.Inspect(s.ctx, k("taken")); err != nil || in.TTL > base+time.Second {
		t.Errorf("Inspect(taken) after our refresh to %v = %+v, %v; want the other owner's %v lease", longer, in, err, base)
	}
	// The other owner's locks work as before.
	for _, r := range []driver.RefreshRequest{{Key: k("taken"), Token: "tok-thief"}, {Key: k("foreign"), Token: "tok-foreign"}} {
		if err := other.Refresh(s.ctx, r.Key, r.Token, base); err != nil {
			t.Errorf("the other owner's Refresh(%q) after the batch: %v", r.Key, err)
		}
	}
	for _, c := range cases {
		if c.held {
			if err := d.Release(s.ctx, c.key, c.token); err != nil && !errors.Is(err, driver.ErrNotHeld) {
				t.Errorf("Release(%q): %v", c.key, err)
			}
		}
	}
	// Locks reported lost stay lost in a second batch.
	errs, _ = s.batch(s.ctx, d, reqs[1:4])
	for i, err := range errs {
		wantResult(t, fmt.Sprintf("second batch, %q", reqs[1+i].Key), err, false)
	}
	if in, err := d.Inspect(s.ctx, k("taken")); err != nil || !in.Held || in.Fence != fences[k("taken")] {
		t.Errorf("Inspect(taken) after our second batch = %+v, %v; want the other owner's lock, fence %d", in, err, fences[k("taken")])
	}
}

// testBatchLostAmongMany: many held locks, a few lost in between (released
// by the owner, or freed and taken by another owner): one batch loses
// exactly those, costs far fewer round trips than one per lock, and every
// other lock is still held.
func testBatchLostAmongMany(t *testing.T, s *batchSuite) {
	d, other := s.driver(), s.driver()
	base, _ := s.ttls(d)
	const n = 200
	reqs := make([]driver.RefreshRequest, n)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: s.key("many/" + strconv.Itoa(i)), Token: "tok-" + strconv.Itoa(i), TTL: base}
		s.acquire(d, reqs[i].Key, reqs[i].Token, base)
	}
	errs, cost := s.batch(s.ctx, d, reqs)
	for i, err := range errs {
		wantResult(t, fmt.Sprintf("all held, request %d", i), err, true)
	}
	if rt, ok := s.h.(RoundTripCounter); ok {
		t.Logf("a batch of %d held locks cost %d round trips", n, cost)
		if max := rt.MaxBatchRoundTrips(n); cost > max {
			t.Errorf("a batch of %d held locks cost %d round trips, want at most %d", n, cost, max)
		}
	}

	lost := map[int]bool{}
	for i := range reqs {
		switch i % 23 {
		case 5: // released by its owner
			lost[i] = true
			if err := d.Release(s.ctx, reqs[i].Key, reqs[i].Token); err != nil {
				t.Fatalf("Release: %v", err)
			}
		case 17: // taken over by another owner
			lost[i] = true
			if err := d.Release(s.ctx, reqs[i].Key, reqs[i].Token); err != nil {
				t.Fatalf("Release: %v", err)
			}
			s.acquire(other, reqs[i].Key, "thief", base)
		}
	}
	errs, cost = s.batch(s.ctx, d, reqs)
	for i, err := range errs {
		wantResult(t, fmt.Sprintf("request %d (lost %v)", i, lost[i]), err, !lost[i])
	}
	if cost >= 0 {
		t.Logf("a batch of %d locks, %d lost, cost %d round trips", n, len(lost), cost)
		if cost >= n/2 {
			t.Errorf("a batch of %d locks, %d lost, cost %d round trips, want far fewer than one per lock", n, len(lost), cost)
		}
	}
	for i, r := range reqs {
		in, err := d.Inspect(s.ctx, r.Key)
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		if released := i%23 == 5; in.Held == released {
			t.Errorf("Inspect(%q) = %+v, want held %v", r.Key, in, !released)
		}
	}
	if err := other.Refresh(s.ctx, reqs[17].Key, "thief", base); err != nil {
		t.Errorf("the other owner's Refresh after our batch: %v", err)
	}
}

// BatchLimiter is an optional Harness method for RunBatchRefresherTests:
// the most locks one round trip of RefreshBatch carries (rows per
// statement, operations per transaction), so the suite checks a batch
// split over several round trips. Without it the suite uses 1000.
type BatchLimiter interface {
	BatchLimit() int
}

// LongestTTLer is an optional Harness method for RunBatchRefresherTests:
// when LongestTTL reports true, the driver refreshes requests with the same
// key and token once, for the longest of their TTLs (as its documentation
// says), and the suite checks it.
type LongestTTLer interface {
	LongestTTL() bool
}

// testBatchLarge: a batch larger than one round trip carries, mostly of
// locks never held, answers each request in order, at the seams too.
func testBatchLarge(t *testing.T, s *batchSuite) {
	d := s.driver()
	base, _ := s.ttls(d)
	limit := 1000
	if bl, ok := s.h.(BatchLimiter); ok {
		limit = bl.BatchLimit()
	}
	big := 2*limit + limit/2
	heldAt := map[int]bool{0: true, limit - 1: true, limit: true, 2*limit - 1: true, big - 1: true}
	reqs := make([]driver.RefreshRequest, big)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: s.key(fmt.Sprintf("big-%05d", i)), Token: "tok-big", TTL: base}
		if heldAt[i] {
			s.acquire(d, reqs[i].Key, reqs[i].Token, base)
		}
	}
	errs, cost := s.batch(s.ctx, d, reqs)
	for i, err := range errs {
		wantResult(t, fmt.Sprintf("big batch, request %d", i), err, heldAt[i])
	}
	if rt, ok := s.h.(RoundTripCounter); ok {
		t.Logf("a batch of %d locks, %d held, cost %d round trips", big, len(heldAt), cost)
		if max := 2 * rt.MaxBatchRoundTrips(big); cost > max {
			t.Errorf("a batch of %d locks, %d held, cost %d round trips, want at most %d", big, len(heldAt), cost, max)
		}
	}
}

// testBatchThroughClient: a Client holding many locks with auto-refresh
// keeps them all for several refresh intervals, refreshing them through a
// few RefreshBatch calls per interval and no single Refresh.
func testBatchThroughClient(t *testing.T, s *batchSuite) {
	inner := s.driver()
	d, counts := CountRefreshes(inner)
	c := dlock.NewClient(d)
	defer c.Close()
	// A TTL of 1 s at least: a batch of n locks under the race detector on
	// a busy machine has been seen to take 0.4 s.
	ttl := max(time.Second, 2*s.shortTTL())
	const n = 200
	rounds := 9 // refresh intervals of TTL/3
	locks := HoldMany(s.ctx, t, c, s.key("client/"), n, ttl)
	// Let the schedule settle: while the locks were being taken each
	// refresh could find only the few taken so far due.
	time.Sleep(ttl)
	rt, counted := s.h.(RoundTripCounter)
	var trips0 int64
	if counted {
		trips0 = rt.RoundTrips(inner)
	}
	batches0, locks0 := counts.Batches.Load(), counts.Locks.Load()
	time.Sleep(time.Duration(rounds) * ttl / 3)
	CheckHeld(t, locks, fmt.Sprintf("after %d refresh intervals", rounds))
	batches, refreshed := counts.Batches.Load()-batches0, counts.Locks.Load()-locks0
	if counted {
		// Each batch carries at most the n locks.
		trips, max := rt.RoundTrips(inner)-trips0, (batches+1)*rt.MaxBatchRoundTrips(n)
		t.Logf("%d round trips while holding %d locks over %d intervals", trips, n, rounds)
		if trips > max {
			t.Errorf("%d round trips for %d RefreshBatch calls over %d locks, want at most %d", trips, batches, n, max)
		}
	}
	t.Logf("%d locks, TTL %v, over %d intervals: %d RefreshBatch calls refreshed %d locks (%d failed results in all); %d single Refresh calls",
		n, ttl, rounds, batches, refreshed, counts.Failed.Load(), counts.Single.Load())
	if single := counts.Single.Load(); single != 0 {
		t.Errorf("single Refresh calls = %d, want 0", single)
	}
	// One call per lock per interval would be n*rounds.
	if want := int64(n * (rounds - 3)); refreshed < want {
		t.Errorf("locks refreshed = %d, want at least %d", refreshed, want)
	}
	if batches == 0 || batches > int64(5*rounds) {
		t.Errorf("RefreshBatch calls = %d for %d locks over %d intervals, want 1..%d", batches, n, rounds, 5*rounds)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		in, err := inner.Inspect(s.ctx, s.key("client/"+strconv.Itoa(i)))
		if err != nil || !in.Held || in.Fence != locks[i].Fence() {
			t.Errorf("Inspect(client/%d) = %+v, %v; want held with fence %d", i, in, err, locks[i].Fence())
		}
	}
	for i, l := range locks {
		if err := l.Unlock(s.ctx); err != nil {
			t.Errorf("Unlock %d: %v", i, err)
		}
	}
}

// testBatchEndedContext: a batch with an ended context fails every request
// with the context's error and leaves the locks held; an empty batch has no
// results.
func testBatchEndedContext(t *testing.T, s *batchSuite) {
	d := s.driver()
	base, _ := s.ttls(d)
	reqs := make([]driver.RefreshRequest, 3)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: s.key(strconv.Itoa(i)), Token: "tok", TTL: base}
		s.acquire(d, reqs[i].Key, reqs[i].Token, base)
	}
	cctx, cancel := context.WithCancel(s.ctx)
	cancel()
	errs, cost := s.batch(cctx, d, reqs)
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled context, request %d: got %v, want context.Canceled", i, err)
		}
	}
	if rt, ok := s.h.(RoundTripCounter); ok && cost > rt.MaxBatchRoundTrips(0) {
		t.Errorf("a batch with a cancelled context cost %d round trips, want %d at most", cost, rt.MaxBatchRoundTrips(0))
	}
	errs, _ = s.batch(s.ctx, d, reqs)
	for i, err := range errs {
		wantResult(t, fmt.Sprintf("after the cancelled batch, request %d", i), err, true)
	}
	if got := d.(driver.BatchRefresher).RefreshBatch(s.ctx, nil); len(got) != 0 {
		t.Errorf("RefreshBatch(nil) = %v, want no results", got)
	}
}

// testBatchClosed: a closed driver fails every request with ErrClosed.
func testBatchClosed(t *testing.T, s *batchSuite) {
	d := s.driver()
	base, _ := s.ttls(d)
	reqs := []driver.RefreshRequest{{Key: s.key("a"), Token: "tok", TTL: base}, {Key: s.key("b"), Token: "tok", TTL: base}}
	s.acquire(d, reqs[0].Key, reqs[0].Token, base)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	errs := d.(driver.BatchRefresher).RefreshBatch(s.ctx, reqs)
	if len(errs) != len(reqs) {
		t.Fatalf("RefreshBatch returned %d results for %d requests", len(errs), len(reqs))
	}
	for i, err := range errs {
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("closed driver, request %d: got %v, want ErrClosed", i, err)
		}
	}
}
