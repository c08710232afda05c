package sqlitedlock_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
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
