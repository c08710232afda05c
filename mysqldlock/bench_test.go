package mysqldlock

import (
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// BenchmarkDriver runs the portable benchmarks (uncontended, hot key,
// batched refresh; see drivertest.RunBenchmarks) over a URL-opened pool and
// an application's database/sql handle on loopback, and over a URL-opened
// pool through a proxy that adds 0.5 ms to each round trip, as a LAN would.
func BenchmarkDriver(b *testing.B) {
	srv := testserver.StartMariaDB(b)
	proxy := testserver.StartProxy(b, srv.Addr())
	proxy.SetLatency(250 * time.Microsecond)
	b.Run("url", func(b *testing.B) { drivertest.RunBenchmarks(b, &harness{srv: srv}) })
	b.Run("database_sql", func(b *testing.B) { drivertest.RunBenchmarks(b, &harness{srv: srv, viaDB: true}) })
	b.Run("rtt0.5ms", func(b *testing.B) {
		drivertest.RunBenchmarks(b, &harness{srv: srv, url: strings.Replace(srv.URL(), srv.Addr(), proxy.Addr(), 1)})
	})
}
