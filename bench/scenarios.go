package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// perUnit divides a count by n; below zero when the count is not measured
// or n is zero.
func perUnit(count int64, n float64) float64 {
	if count < 0 || n <= 0 {
		return -1
	}
	return float64(count) / n
}

// uncontendedResult is scenario 1 for one subject: one client locks and
// unlocks a free key, again and again.
type uncontendedResult struct {
	subject     *subject
	ops         int
	elapsed     time.Duration
	p50, p99    time.Duration
	serverPerOp float64 // server commands per lock+unlock
	rtPerOp     float64 // round trips per lock+unlock (Redis), else < 0
	err         error
}

func (r *uncontendedResult) opsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// uncontendedRun is one subject's client, open across the rounds of
// scenario 1.
type uncontendedRun struct {
	res     *uncontendedResult
	cycle   func() error
	close   func()
	lat     []time.Duration
	counted counts
}

// openUncontended opens the subject's client and warms it up
// (connections, cached scripts and statements, the server's JIT).
func openUncontended(ctx context.Context, s *subject, key string, warm time.Duration) *uncontendedRun {
	u := &uncontendedRun{res: &uncontendedResult{subject: s}, close: func() {}}
	locks, closeFn, err := s.contenders(ctx, key, 1)
	if err != nil {
		u.res.err = err
		return u
	}
	u.close = closeFn
	lock := locks[0]
	u.cycle = func() error {
		unlock, err := lock(ctx)
		if err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if err := unlock(ctx); err != nil {
			return fmt.Errorf("unlock: %w", err)
		}
		return nil
	}
	for end := time.Now().Add(warm); time.Now().Before(end); {
		if u.res.err = u.cycle(); u.res.err != nil {
			return u
		}
	}
	return u
}

// round locks and unlocks for d, adding to the subject's latencies and
// counts.
func (u *uncontendedRun) round(ctx context.Context, b *backend, d time.Duration) {
	if u.res.err != nil {
		return
	}
	before, err := b.counter(ctx)
	if err != nil {
		u.res.err = err
		return
	}
	start := time.Now()
	for time.Since(start) < d {
		t := time.Now()
		if u.res.err = u.cycle(); u.res.err != nil {
			return
		}
		u.lat = append(u.lat, time.Since(t))
	}
	u.res.elapsed += time.Since(start)
	after, err := b.counter(ctx)
	if err != nil {
		u.res.err = err
		return
	}
	d2 := after.sub(before)
	u.counted.server += d2.server
	if d2.roundTrips < 0 || u.counted.roundTrips < 0 {
		u.counted.roundTrips = -1
	} else {
		u.counted.roundTrips += d2.roundTrips
	}
}

// finish closes the client and computes the result.
func (u *uncontendedRun) finish() *uncontendedResult {
	u.close()
	r := u.res
	r.ops = len(u.lat)
	r.p50, r.p99 = percentile(u.lat, 0.50), percentile(u.lat, 0.99)
	r.serverPerOp = perUnit(u.counted.server, float64(r.ops))
	r.rtPerOp = perUnit(u.counted.roundTrips, float64(r.ops))
	return r
}

// runUncontended measures the subjects of one backend in turn, in rounds,
// so that a change of the machine's load during the run affects them alike.
// Subject i uses the key prefix + i.
func runUncontended(ctx context.Context, b *backend, subjects []*subject, prefix string, d time.Duration, rounds int) []*uncontendedResult {
	runs := make([]*uncontendedRun, len(subjects))
	for i, s := range subjects {
		runs[i] = openUncontended(ctx, s, fmt.Sprintf("%s%d", prefix, i), min(d/4, 300*time.Millisecond))
	}
	for r := 0; r < rounds; r++ {
		for i := range runs {
			// Rotate the order so that no subject always follows another.
			runs[(i+r)%len(runs)].round(ctx, b, d/time.Duration(rounds))
		}
	}
	out := make([]*uncontendedResult, len(runs))
	for i, u := range runs {
		out[i] = u.finish()
	}
	return out
}

// hotResult is scenario 2 for one subject and one number of contenders:
// every contender takes the same key in turn and holds it about 1 ms.
type hotResult struct {
	subject    *subject
	contenders int
	// limit is how many may hold at once: 1 on the hot key, the permits
	// of a semaphore; peak the most holders seen at once in this process.
	limit, peak int
	window      time.Duration
	// grants counts the acquisitions within the window; all counts the
	// ones after it too (contenders finishing their last wait).
	grants, all int
	// handoff: from one holder calling unlock to another contender's lock
	// returning.
	handoffP50, handoffP99 time.Duration
	// handoffMax is the longest hand-off: a stall shows here.
	handoffMax time.Duration
	// handoffs counts grants in the window that went to another contender
	// than the one before.
	handoffs int
	// fairMax, fairMin: most and fewest acquisitions of one contender in
	// the window.
	fairMax, fairMin int
	serverPerAcq     float64
	rtPerAcq         float64
	// giveUps counts lock calls that returned an error before the window
	// ended (a library that stops retrying); overlaps counts grants made
	// while limit others held the lock (should be zero).
	giveUps, overlaps int
	err               error
}

func (r *hotResult) perSec() float64 {
	if r.window <= 0 {
		return 0
	}
	return float64(r.grants) / r.window.Seconds()
}

// handoffsPerSec is how often the key moved from one contender to another.
func (r *hotResult) handoffsPerSec() float64 {
	if r.window <= 0 {
		return 0
	}
	return float64(r.handoffs) / r.window.Seconds()
}

type grant struct {
	who int
	// acquired: the lock call returned; unlocking: the unlock call began.
	acquired, unlocking time.Time
	inWindow            bool
}

// maxGiveUps ends a contender whose lock keeps failing.
const maxGiveUps = 100_000

func runHotKey(ctx context.Context, b *backend, s *subject, key string, n int, window, hold time.Duration) *hotResult {
	res := &hotResult{subject: s, contenders: n, window: window, limit: 1}
	locks, closeFn, err := s.contenders(ctx, key, n)
	if err != nil {
		res.err = err
		return res
	}
	defer closeFn()
	contend(ctx, b, res, locks, hold)
	return res
}

// contend runs res.contenders closed loops on locks (one each), res.limit
// of which may hold at once, for res.window, after each contender has taken
// the lock once to warm up, and fills in res.
func contend(ctx context.Context, b *backend, res *hotResult, locks []lockFunc, hold time.Duration) {
	n, window := len(locks), res.window
	// Warm up: each contender takes the key once, one after another.
	for i, lock := range locks {
		unlock, err := lock(ctx)
		if err == nil {
			err = unlock(ctx)
		}
		if err != nil {
			res.err = fmt.Errorf("warm-up of contender %d: %w", i, err)
			return
		}
	}
	before, err := b.counter(ctx)
	if err != nil {
		res.err = err
		return
	}
	var (
		mu       sync.Mutex
		grants   []grant
		firstErr firstErr
		holders  atomic.Int32
		peak     atomic.Int32
		overlaps atomic.Int64
		giveUps  atomic.Int64
		wg       sync.WaitGroup
	)
	limit := int32(res.limit)
	lockCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	end := start.Add(window)
	stop := time.AfterFunc(window, cancel)
	defer stop.Stop()
	for i, lock := range locks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fails := 0
			for time.Now().Before(end) {
				unlock, err := lock(lockCtx)
				if err != nil {
					if lockCtx.Err() != nil {
						return
					}
					giveUps.Add(1)
					if fails++; fails > maxGiveUps {
						firstErr.set(fmt.Errorf("contender %d: %w", i, err))
						return
					}
					continue
				}
				acquired := time.Now()
				// The count goes up after the grant and down before the
				// release, so it can only exceed the limit if the
				// backend's grants overlapped.
				h := holders.Add(1)
				if h > limit {
					overlaps.Add(1)
				}
				for p := peak.Load(); h > p && !peak.CompareAndSwap(p, h); p = peak.Load() {
				}
				in := acquired.Before(end)
				if in {
					time.Sleep(hold)
				}
				holders.Add(-1)
				unlocking := time.Now()
				uctx, ucancel := context.WithTimeout(ctx, 10*time.Second)
				err = unlock(uctx)
				ucancel()
				if err != nil {
					firstErr.set(fmt.Errorf("contender %d: unlock: %w", i, err))
					return
				}
				mu.Lock()
				grants = append(grants, grant{who: i, acquired: acquired, unlocking: unlocking, inWindow: in})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	after, err := b.counter(ctx)
	if err == nil {
		err = firstErr.get()
	}
	if err != nil {
		res.err = err
		return
	}
	res.giveUps = int(giveUps.Load())
	res.overlaps = int(overlaps.Load())
	res.peak = int(peak.Load())
	res.all = len(grants)
	// A grant beyond the first limit ones takes the permit of the oldest
	// release not yet taken (with a limit of 1: the previous grant's).
	releases := slices.Clone(grants)
	slices.SortFunc(releases, func(x, y grant) int { return x.unlocking.Compare(y.unlocking) })
	slices.SortFunc(grants, func(x, y grant) int { return x.acquired.Compare(y.acquired) })
	per := make([]int, n)
	var handoffs []time.Duration
	for i, g := range grants {
		var freed *grant
		if j := i - res.limit; j >= 0 {
			freed = &releases[j]
		}
		if !g.inWindow {
			continue
		}
		res.grants++
		per[g.who]++
		if freed != nil && freed.who != g.who {
			handoffs = append(handoffs, max(g.acquired.Sub(freed.unlocking), 0))
		}
	}
	res.fairMax, res.fairMin = slices.Max(per), slices.Min(per)
	res.handoffs = len(handoffs)
	res.handoffP50, res.handoffP99 = percentile(handoffs, 0.50), percentile(handoffs, 0.99)
	if len(handoffs) > 0 {
		res.handoffMax = slices.Max(handoffs)
	}
	delta := after.sub(before)
	res.serverPerAcq = perUnit(delta.server, float64(res.all))
	res.rtPerAcq = perUnit(delta.roundTrips, float64(res.all))
	if res.grants == 0 {
		res.err = errors.New("no acquisition in the window")
	}
}

// heldResult is scenario 3 for one subject and one number of keys: one
// client holds them all while its refresh keeps them alive.
type heldResult struct {
	subject *subject
	keys    int
	ttl     time.Duration
	window  time.Duration
	acquire time.Duration // time to take every key
	// serverPerSec, rtPerSec: traffic per second during the window.
	serverPerSec, rtPerSec float64
	// cpu is the process's CPU time during the window, per second of the
	// window (1 = one core busy).
	cpu  float64
	lost int
	err  error
}

// naivePerSec is one refresh per lock per refresh interval (TTL/3).
func (r *heldResult) naivePerSec() float64 {
	return float64(r.keys) / (r.ttl / 3).Seconds()
}

func runHeld(ctx context.Context, b *backend, s *subject, prefix string, n int, ttl, window time.Duration) (res *heldResult) {
	res = &heldResult{subject: s, keys: n, ttl: ttl, window: window}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	t0 := time.Now()
	h, err := s.hold(ctx, keys, ttl)
	res.acquire = time.Since(t0)
	if err != nil {
		res.err = err
		return res
	}
	defer func() {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := h.release(rctx); err != nil && res.err == nil {
			res.err = fmt.Errorf("release: %w", err)
		}
	}()
	before, err := b.counter(ctx)
	if err != nil {
		res.err = err
		return res
	}
	cpu0, t1 := cpuTime(), time.Now()
	select {
	case <-ctx.Done():
		res.err = ctx.Err()
		return res
	case <-time.After(window):
	}
	cpu1, elapsed := cpuTime(), time.Since(t1)
	after, err := b.counter(ctx)
	if err != nil {
		res.err = err
		return res
	}
	res.lost = h.lost()
	delta := after.sub(before)
	res.serverPerSec = perUnit(delta.server, elapsed.Seconds())
	res.rtPerSec = perUnit(delta.roundTrips, elapsed.Seconds())
	res.cpu = (cpu1 - cpu0).Seconds() / elapsed.Seconds()
	return res
}
