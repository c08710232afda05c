package pgdlock

import (
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// BenchmarkDriver runs the portable benchmarks (uncontended, hot key,
// batched refresh; see drivertest.RunBenchmarks) over pgxpool and
// database/sql on loopback, over pgxpool through a proxy that adds 0.5 ms
// to each round trip, as a LAN would, and with notifications off and the
// table polled every 100 ms: compare its HotKey hand-offs with pgxpool's,
// woken by LISTEN/NOTIFY.
func BenchmarkDriver(b *testing.B) {
	pg := testserver.StartPostgres(b)
	proxy := testserver.StartProxy(b, pg.Addr())
	proxy.SetLatency(250 * time.Microsecond)
	b.Run("pgxpool", func(b *testing.B) { drivertest.RunBenchmarks(b, &harness{url: pg.URL()}) })
	b.Run("database_sql", func(b *testing.B) { drivertest.RunBenchmarks(b, &harness{url: pg.URL(), viaDB: true}) })
	b.Run("rtt0.5ms", func(b *testing.B) {
		drivertest.RunBenchmarks(b, &harness{url: strings.Replace(pg.URL(), pg.Addr(), proxy.Addr(), 1)})
	})
	b.Run("poll100ms", func(b *testing.B) {
		drivertest.RunBenchmarks(b, &harness{url: pg.URL() + "&notify=false"},
			dlock.WithLockDefaults(dlock.WithRetry(dlock.LinearBackoff(100*time.Millisecond))))
	})
}
