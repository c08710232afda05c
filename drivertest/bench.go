package drivertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// Benchmark shapes: how many contenders share the hot key, how long each
// holds it, and how long one run of a sub-benchmark may take before it
// fails instead of hanging.
var benchContenders = []int{1, 4, 16}

const (
	benchHold     = time.Millisecond
	benchTTL      = 10 * time.Second
	benchDeadline = 5 * time.Minute
	benchRefreshN = 200
)

// RunBenchmarks runs the portable benchmarks against the backend h connects
// to. A driver's bench_test.go calls it once per connection mode worth
// measuring:
//
//	func BenchmarkDriver(b *testing.B) {
//		srv := startServer(b) // a real backend
//		drivertest.RunBenchmarks(b, &harness{addr: srv.Addr()})
//	}
//
// and runs it with, for example, go test -run '^$' -bench Driver
// -benchtime 2s ./yourdriver. RunBenchmarks closes h when b ends. opts are
// passed to every dlock.Client it makes (for example
// dlock.WithLockDefaults(dlock.WithRetry(...)) to measure another retry
// strategy); its own lock options (TTL 10 s, auto-refresh off) come after
// them.
//
// The sub-benchmarks:
//
//   - Uncontended: one op is TryLock and Unlock of a free key by one
//     Client, auto-refresh off. This is the backend's floor of two round
//     trips.
//   - HotKey/contenders=N, for N of 1, 4 and 16: N goroutines, each with its
//     own Client over its own driver from h (as separate processes would
//     be), share b.N critical sections on one key: Lock (the Client's
//     default retry strategy, so notifications and native queues are
//     used), hold the key for 1 ms, Unlock. One op is one critical section.
//     A critical section that finds another one running fails the
//     benchmark. Metrics: cs/s, critical sections per second;
//     handoff-p50-µs and handoff-p99-µs, from one holder's Unlock returning
//     to another contender's Lock returning; handoff-%, the share of grants
//     that went to a different contender than the one before; and, for N
//     above 1, min-share and max-share, the fewest and most critical
//     sections one contender had, as a fraction of the fair share b.N/N (1
//     and 1 is perfectly fair; a min-share of 0 is a starved contender).
//   - RefreshBatch/single, RefreshBatch/batch and RefreshBatch/ratio, only
//     when the driver implements driver.BatchRefresher: one op refreshes
//     200 locks held by one driver, with 200 Refresh calls or with one
//     RefreshBatch call; ratio reports single/batch (run both for it).
//
// Each run of a sub-benchmark has a deadline of 5 minutes and fails when it
// passes, so a lost wake-up shows as a failure, not a hang.
func RunBenchmarks(b *testing.B, h Harness, opts ...dlock.Option) {
	b.Helper()
	b.Cleanup(h.Close)
	prefix := benchPrefix()
	b.Run("Uncontended", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(b.Context(), benchDeadline)
		defer cancel()
		c := benchClient(b, h, opts)
		key := prefix + "uncontended"
		b.ReportAllocs()
		for b.Loop() {
			l, err := c.TryLock(ctx, key, dlock.WithTTL(benchTTL), dlock.WithAutoRefresh(false))
			if err != nil {
				b.Fatalf("TryLock(%q): %v", key, err)
			}
			if err := l.Unlock(ctx); err != nil {
				b.Fatalf("Unlock(%q): %v", key, err)
			}
		}
	})
	for _, n := range benchContenders {
		b.Run(fmt.Sprint("HotKey/contenders=", n), func(b *testing.B) {
			benchHotKey(b, h, opts, fmt.Sprint(prefix, "hot-", n, "-", b.N), n)
		})
	}
	d, err := h.MakeDriver(b.Context())
	if err != nil {
		b.Fatalf("MakeDriver: %v", err)
	}
	defer d.Close()
	if br, ok := d.(driver.BatchRefresher); ok {
		b.Run("RefreshBatch", func(b *testing.B) { benchRefreshBatch(b, d, br, prefix+"refresh-") })
	}
}

// benchPrefix returns a key prefix of random hex digits, so that runs never
// share keys.
func benchPrefix() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "bench-" + hex.EncodeToString(r[:]) + "-"
}

// benchClient makes a Client over a new driver from h, closed when b ends.
func benchClient(b *testing.B, h Harness, opts []dlock.Option) *dlock.Client {
	b.Helper()
	d, err := h.MakeDriver(b.Context())
	if err != nil {
		b.Fatalf("MakeDriver: %v", err)
	}
	c := dlock.NewClient(d, opts...)
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// benchGrant is one critical section of the hot-key benchmark.
type benchGrant struct {
	who                int
	acquired, released time.Time
}

// benchHotKey runs b.N critical sections on key among n contenders, each
// with a Client of its own, and reports the metrics RunBenchmarks names.
func benchHotKey(b *testing.B, h Harness, opts []dlock.Option, key string, n int) {
	ctx, cancel := context.WithTimeout(b.Context(), benchDeadline)
	defer cancel()
	clients := make([]*dlock.Client, n)
	for i := range clients {
		clients[i] = benchClient(b, h, opts)
	}
	var (
		left   atomic.Int64
		inside atomic.Int32
		mu     sync.Mutex
		grants = make([]benchGrant, 0, b.N)
		errs   []error
		wg     sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		cancel() // the other contenders stop too
	}
	left.Store(int64(b.N))
	b.ResetTimer()
	start := time.Now()
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				l, err := c.Lock(ctx, key, dlock.WithTTL(benchTTL), dlock.WithAutoRefresh(false))
				if err != nil {
					fail(fmt.Errorf("contender %d: Lock(%q): %w", i, key, err))
					return
				}
				acquired := time.Now()
				if inside.Add(1) != 1 {
					fail(fmt.Errorf("contender %d: two critical sections on %q at once", i, key))
				}
				time.Sleep(benchHold)
				inside.Add(-1)
				if err := l.Unlock(ctx); err != nil {
					fail(fmt.Errorf("contender %d: Unlock(%q): %w", i, key, err))
					return
				}
				mu.Lock()
				grants = append(grants, benchGrant{who: i, acquired: acquired, released: time.Now()})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(errs) > 0 {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			b.Fatalf("deadline of %v passed after %d of %d critical sections: %v", benchDeadline, len(grants), b.N, errs[0])
		}
		b.Fatalf("after %d of %d critical sections: %v", len(grants), b.N, errs[0])
	}
	reportHotKey(b, grants, n, elapsed)
}

// reportHotKey reports the hot-key metrics of grants, made by n contenders
// in elapsed.
func reportHotKey(b *testing.B, grants []benchGrant, n int, elapsed time.Duration) {
	b.ReportMetric(float64(len(grants))/elapsed.Seconds(), "cs/s")
	slices.SortFunc(grants, func(x, y benchGrant) int { return x.acquired.Compare(y.acquired) })
	var handoffs []time.Duration
	per := make([]int, n)
	for i, g := range grants {
		per[g.who]++
		if i == 0 || g.who == grants[i-1].who {
			continue // the same contender again: not a hand-off
		}
		handoffs = append(handoffs, max(g.acquired.Sub(grants[i-1].released), 0))
	}
	if len(handoffs) > 0 {
		slices.Sort(handoffs)
		b.ReportMetric(float64(handoffs[len(handoffs)/2].Microseconds()), "handoff-p50-µs")
		b.ReportMetric(float64(handoffs[len(handoffs)*99/100].Microseconds()), "handoff-p99-µs")
	}
	b.ReportMetric(float64(len(handoffs))/float64(max(len(grants)-1, 1))*100, "handoff-%")
	if n > 1 && len(grants) > 0 {
		fair := float64(len(grants)) / float64(n)
		b.ReportMetric(float64(slices.Min(per))/fair, "min-share")
		b.ReportMetric(float64(slices.Max(per))/fair, "max-share")
	}
}

// benchRefreshBatch measures refreshing benchRefreshN locks held by d, one
// Refresh at a time and with one RefreshBatch, and their ratio.
func benchRefreshBatch(b *testing.B, d driver.Locker, br driver.BatchRefresher, prefix string) {
	ctx, cancel := context.WithTimeout(b.Context(), benchDeadline)
	defer cancel()
	reqs := make([]driver.RefreshRequest, benchRefreshN)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: fmt.Sprint(prefix, i), Token: "bench", TTL: time.Minute}
		res, err := d.Acquire(ctx, driver.Request{Key: reqs[i].Key, Token: "bench", TTL: time.Minute})
		if err != nil || !res.Acquired {
			b.Fatalf("Acquire(%q) = %+v, %v", reqs[i].Key, res, err)
		}
	}
	var single, batch float64 // ns per op
	b.Run("single", func(b *testing.B) {
		for b.Loop() {
			for _, r := range reqs {
				if err := d.Refresh(ctx, r.Key, r.Token, r.TTL); err != nil {
					b.Fatalf("Refresh(%q): %v", r.Key, err)
				}
			}
		}
		single = float64(b.Elapsed()) / float64(b.N)
	})
	b.Run("batch", func(b *testing.B) {
		for b.Loop() {
			for i, err := range br.RefreshBatch(ctx, reqs) {
				if err != nil {
					b.Fatalf("RefreshBatch: request %d (%q): %v", i, reqs[i].Key, err)
				}
			}
		}
		batch = float64(b.Elapsed()) / float64(b.N)
	})
	b.Run("ratio", func(b *testing.B) {
		if single == 0 || batch == 0 {
			b.Skip("run both single and batch for the ratio")
		}
		for b.Loop() {
		}
		b.ReportMetric(single/batch, "single/batch")
	})
}
