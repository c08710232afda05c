package sqlitedlock_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
	"github.com/dlock-go/dlock/sqlitedlock"
)

func benchClient(b *testing.B, path string) *dlock.Client {
	b.Helper()
	c, err := sqlitedlock.Open(b.Context(), path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkTryLockUnlock measures one uncontended TryLock+Unlock pair on a
// database file (two statements, each a write), next to the in-memory
// driver for scale.
func BenchmarkTryLockUnlock(b *testing.B) {
	run := func(b *testing.B, c *dlock.Client) {
		ctx := b.Context()
		for b.Loop() {
			l, err := c.TryLock(ctx, "bench", dlock.WithAutoRefresh(false))
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Unlock(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("sqlite-file", func(b *testing.B) {
		run(b, benchClient(b, filepath.Join(b.TempDir(), "bench.db")))
	})
	b.Run("mem", func(b *testing.B) {
		c := memdlock.NewClient()
		b.Cleanup(func() { _ = c.Close() })
		run(b, c)
	})
}

// BenchmarkHotKey measures Lock+Unlock of one key by 4 goroutines, sharing
// one client or each with its own client (own connection) on the same file.
// Each op is one grant.
func BenchmarkHotKey(b *testing.B) {
	const workers = 4
	run := func(b *testing.B, clients []*dlock.Client) {
		ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
		defer cancel()
		retry := dlock.WithRetry(dlock.ExponentialBackoff(time.Millisecond, 25*time.Millisecond))
		work := make(chan struct{}, 64)
		var wg sync.WaitGroup
		b.ResetTimer()
		for i := range workers {
			wg.Add(1)
			go func(c *dlock.Client) {
				defer wg.Done()
				for range work {
					l, err := c.Lock(ctx, "hot", retry, dlock.WithAutoRefresh(false))
					if err != nil {
						b.Error(err)
						return
					}
					if err := l.Unlock(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			}(clients[i%len(clients)])
		}
		for range b.N {
			work <- struct{}{}
		}
		close(work)
		wg.Wait()
	}
	b.Run("sqlite-one-client", func(b *testing.B) {
		run(b, []*dlock.Client{benchClient(b, filepath.Join(b.TempDir(), "bench.db"))})
	})
	b.Run("sqlite-four-clients", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "bench.db")
		var cs []*dlock.Client
		for range workers {
			cs = append(cs, benchClient(b, path))
		}
		run(b, cs)
	})
	b.Run("mem", func(b *testing.B) {
		c := memdlock.NewClient()
		b.Cleanup(func() { _ = c.Close() })
		run(b, []*dlock.Client{c})
	})
}

// BenchmarkRefresh compares refreshing 200 held locks one statement (and
// one write transaction) at a time with one batched statement.
func BenchmarkRefresh(b *testing.B) {
	d, err := sqlitedlock.OpenDriver(b.Context(), filepath.Join(b.TempDir(), "bench.db"), sqlitedlock.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	benchRefresh(b, d)
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
