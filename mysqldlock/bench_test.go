package mysqldlock

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// BenchmarkRefresh compares refreshing 200 held locks one statement at a
// time with one batched statement, on loopback and through a proxy that
// adds 0.5 ms to each round trip, as a LAN would.
func BenchmarkRefresh(b *testing.B) {
	srv := testserver.StartMariaDB(b)
	proxy := testserver.StartProxy(b, srv.Addr())
	proxy.SetLatency(250 * time.Microsecond)
	for _, m := range []struct{ name, addr string }{{"loopback", srv.Addr()}, {"rtt0.5ms", proxy.Addr()}} {
		b.Run(m.name, func(b *testing.B) {
			u, err := driver.ParseURL(strings.Replace(srv.URL(), srv.Addr(), m.addr, 1))
			if err != nil {
				b.Fatal(err)
			}
			d, err := openURL(b.Context(), u)
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
