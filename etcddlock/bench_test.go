package etcddlock

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// Both benchmarks run dlock and etcd's own concurrency.Mutex on the same
// server, interleaved in every iteration, and report each one's time per
// lock and their ratio (dlock/mutex; below 1 means dlock is faster).

func reportRatio(b *testing.B, dlockT, mutexT time.Duration, locks int) {
	d := float64(dlockT.Nanoseconds()) / float64(locks)
	m := float64(mutexT.Nanoseconds()) / float64(locks)
	b.ReportMetric(d, "dlock-ns/lock")
	b.ReportMetric(m, "mutex-ns/lock")
	b.ReportMetric(d/m, "dlock/mutex")
}

// BenchmarkUncontended: Lock and Unlock of a free key, one after another,
// through a dlock Client, through the driver alone (without the portable
// layer's token, watchdog and timers), and with concurrency.Mutex.
func BenchmarkUncontended(b *testing.B) {
	srv := testserver.StartEtcd(b)
	ctx := context.Background()
	c := openClient(b, "etcd://"+srv.Addr())
	d, err := openDriver(ctx, "etcd://"+srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	q := d.(driver.Queuer)
	m := concurrency.NewMutex(benchSession(b, srv), "bench-uncontended-mutex")
	cycles := []func() error{
		func() error {
			l, err := c.Lock(ctx, "bench-uncontended")
			if err != nil {
				return err
			}
			return l.Unlock(ctx)
		},
		func() error {
			req := driver.Request{Key: "bench-uncontended-driver", Token: "t", TTL: dlock.DefaultTTL, Metadata: dlock.DefaultMetadata()}
			if _, err := q.AcquireQueued(ctx, req); err != nil {
				return err
			}
			return d.Release(ctx, req.Key, req.Token)
		},
		func() error {
			if err := m.Lock(ctx); err != nil {
				return err
			}
			return m.Unlock(ctx)
		},
	}
	var spent [3]time.Duration
	n := 0
	for b.Loop() {
		// Rotate which goes first, so that none always runs right after
		// another's writes.
		for j := range cycles {
			i := (j + n) % len(cycles)
			t := time.Now()
			if err := cycles[i](); err != nil {
				b.Fatal(err)
			}
			spent[i] += time.Since(t)
		}
		n++
	}
	reportRatio(b, spent[0], spent[2], n)
	dr := float64(spent[1].Nanoseconds()) / float64(n)
	b.ReportMetric(dr, "driver-ns/lock")
	b.ReportMetric(dr/(float64(spent[2].Nanoseconds())/float64(n)), "driver/mutex")
}

// BenchmarkHandoff: 8 contenders, each with its own connection, take one
// hot key 4 times each; every grant after the first is a hand-off from a
// release to the next waiter in the queue.
func BenchmarkHandoff(b *testing.B) {
	const contenders, rounds = 8, 4
	srv := testserver.StartEtcd(b)
	ctx := context.Background()
	clients := make([]*dlock.Client, contenders)
	sessions := make([]*concurrency.Session, contenders)
	for i := range clients {
		clients[i] = openClient(b, "etcd://"+srv.Addr())
		sessions[i] = benchSession(b, srv)
	}
	run := func(fn func(i int) error) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for i := 0; i < contenders; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(i); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	var dT, mT time.Duration
	n := 0
	for b.Loop() {
		dT += run(func(i int) error {
			for r := 0; r < rounds; r++ {
				l, err := clients[i].Lock(ctx, "bench-handoff")
				if err != nil {
					return err
				}
				if err := l.Unlock(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		mT += run(func(i int) error {
			m := concurrency.NewMutex(sessions[i], "bench-handoff-mutex")
			for r := 0; r < rounds; r++ {
				if err := m.Lock(ctx); err != nil {
					return err
				}
				if err := m.Unlock(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		n += contenders * rounds
	}
	reportRatio(b, dT, mT, n)
}

// benchSession is a concurrency session on a connection of its own.
func benchSession(b *testing.B, srv *testserver.Etcd) *concurrency.Session {
	b.Helper()
	s, err := concurrency.NewSession(rawClient(b, srv.Endpoints()), concurrency.WithTTL(30))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}
