package pgdlock

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// Hot-key hand-off: contenders (each a client of its own, as separate
// processes would be) want one key at the same moment; each holds it for
// about a millisecond, once per round, so that every grant but a round's
// first is a hand-off from one contender to another. One op is one grant:
// ns/op is the hold plus the hand-off.
const (
	contenders = 12
	hold       = time.Millisecond
)

// BenchmarkHotKeyHandoff compares waking waiters with LISTEN/NOTIFY against
// the same table polled every 100 ms (notifications off). The last
// sub-benchmark reports the ratio of the two.
func BenchmarkHotKeyHandoff(b *testing.B) {
	pg := testserver.StartPostgres(b)
	results := map[string]float64{} // ms per grant
	modes := []struct {
		name  string
		n     int
		query string
		retry dlock.RetryStrategy
	}{
		// The floor: one contender, no hand-off, only hold and round trips.
		{"uncontended", 1, "", dlock.DefaultRetry},
		{"notify", contenders, "", dlock.DefaultRetry},
		{"poll100ms", contenders, "&notify=false", dlock.LinearBackoff(100 * time.Millisecond)},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			ms := handoff(b, pg.URL()+m.query, m.n, m.retry)
			results[m.name] = ms
			b.ReportMetric(ms, "ms/grant")
			b.ReportMetric(1000/ms, "grants/s")
		})
	}
	b.Run("ratio", func(b *testing.B) {
		n, p := results["notify"], results["poll100ms"]
		if n == 0 || p == 0 {
			b.Skip("run both modes for the ratio")
		}
		for b.Loop() {
		}
		b.ReportMetric(p/n, "poll/notify")
	})
}

// handoff runs b.N grants of one key among n contenders and returns the
// mean time per grant in milliseconds.
func handoff(b *testing.B, url string, n int, retry dlock.RetryStrategy) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	clients := make([]*dlock.Client, n)
	for i := range clients {
		c, err := dlock.Open(ctx, url)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	key := fmt.Sprintf("hot-%d", time.Now().UnixNano())
	errs := make(chan error, b.N)
	start := time.Now()
	b.ResetTimer()
	for left := b.N; left > 0; left -= n {
		var wg sync.WaitGroup
		for _, c := range clients[:min(left, n)] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := c.Lock(ctx, key, dlock.WithRetry(retry), dlock.WithTTL(10*time.Second))
				if err != nil {
					errs <- err
					return
				}
				time.Sleep(hold)
				if err := l.Unlock(ctx); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return float64(elapsed) / float64(time.Millisecond) / float64(b.N)
}

// BenchmarkRefresh compares refreshing 200 held locks one statement at a
// time with one batched statement, on loopback and through a proxy that
// adds 0.5 ms to each round trip, as a LAN would.
func BenchmarkRefresh(b *testing.B) {
	pg := testserver.StartPostgres(b)
	proxy := testserver.StartProxy(b, pg.Addr())
	proxy.SetLatency(250 * time.Microsecond)
	for _, m := range []struct{ name, addr string }{{"loopback", pg.Addr()}, {"rtt0.5ms", proxy.Addr()}} {
		b.Run(m.name, func(b *testing.B) {
			d, err := (&harness{url: strings.Replace(pg.URL(), pg.Addr(), m.addr, 1)}).MakeDriver(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			benchRefresh(b, d)
		})
	}
}

// benchRefresh measures refreshing 200 locks held by d once: 200 Refresh
// calls one after another, against one RefreshBatch. One op refreshes all
// 200. The last sub-benchmark reports the ratio of the two.
func benchRefresh(b *testing.B, d driver.Locker) {
	ctx := b.Context()
	const n = 200
	reqs := make([]driver.RefreshRequest, n)
	for i := range reqs {
		reqs[i] = driver.RefreshRequest{Key: fmt.Sprint("bench-refresh-", i), Token: "bench", TTL: time.Minute}
		if res, err := d.Acquire(ctx, driver.Request{Key: reqs[i].Key, Token: "bench", TTL: time.Minute}); err != nil || !res.Acquired {
			b.Fatalf("Acquire = %+v, %v", res, err)
		}
	}
	results := map[string]float64{} // ms per op
	b.Run("single", func(b *testing.B) {
		for b.Loop() {
			for _, r := range reqs {
				if err := d.Refresh(ctx, r.Key, r.Token, r.TTL); err != nil {
					b.Fatal(err)
				}
			}
		}
		results["single"] = float64(b.Elapsed()) / float64(time.Millisecond) / float64(b.N)
	})
	b.Run("batch", func(b *testing.B) {
		for b.Loop() {
			for _, err := range d.(driver.BatchRefresher).RefreshBatch(ctx, reqs) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		results["batch"] = float64(b.Elapsed()) / float64(time.Millisecond) / float64(b.N)
	})
	b.Run("ratio", func(b *testing.B) {
		s, bt := results["single"], results["batch"]
		if s == 0 || bt == 0 {
			b.Skip("run both modes for the ratio")
		}
		for b.Loop() {
		}
		b.ReportMetric(s/bt, "single/batch")
	})
}
