package pgdlock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// countingQuerier counts the requests sent through a querier: each one
// (a statement, or a row lock batched with the statement after it) is one
// round trip to the server.
type countingQuerier struct {
	querier
	n atomic.Int64
}

func (c *countingQuerier) queryRow(ctx context.Context, query string, args []any, dest ...any) (bool, error) {
	c.n.Add(1)
	return c.querier.queryRow(ctx, query, args, dest...)
}

func (c *countingQuerier) lockedQueryRow(ctx context.Context, lock string, lockArgs int, query string, args []any, dest ...any) (bool, error) {
	c.n.Add(1)
	return c.querier.lockedQueryRow(ctx, lock, lockArgs, query, args, dest...)
}

func (c *countingQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	c.n.Add(1)
	return c.querier.exec(ctx, query, args...)
}

func (c *countingQuerier) query(ctx context.Context, query string, args []any, each func(scan func(dest ...any) error) error) error {
	c.n.Add(1)
	return c.querier.query(ctx, query, args, each)
}

// pgOf returns the *pgDriver of a driver OpenURL made.
func pgOf(t *testing.T, d driver.Locker) *pgDriver {
	t.Helper()
	switch d := d.(type) {
	case *pgDriver:
		return d
	case pollOnly:
		return d.Locker.(*pgDriver)
	}
	t.Fatalf("driver %T", d)
	return nil
}

// TestSharedRoundTrips: an uncontended permit costs one statement to take,
// one to refresh and one to release, as a mutex does, through
// driver.ShareKeeper (which the portable layer uses for shared grants;
// Refresh and Release try the exclusive lease first: two), with
// notifications on and off; LockMany's AcquireMany costs one statement for
// all its keys.
func TestSharedRoundTrips(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, q := range []string{"", "&notify=false"} {
		u, err := driver.ParseURL(pg.URL() + q)
		if err != nil {
			t.Fatal(err)
		}
		dl, err := OpenURL(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		defer dl.Close()
		d := pgOf(t, dl)
		cq := &countingQuerier{querier: d.q}
		d.q = cq
		count := func(what string, want int64, fn func() error) {
			t.Helper()
			before := cq.n.Load()
			if err := fn(); err != nil {
				t.Fatalf("%s%s: %v", what, q, err)
			}
			if got := cq.n.Load() - before; got != want {
				t.Errorf("%s%s: %d statements, want %d", what, q, got, want)
			}
		}
		req := driver.SharedRequest{Request: driver.Request{Key: "rt" + q, Token: "a", TTL: 10 * time.Second}, Limit: 2}
		for _, tok := range []string{"a", "b"} {
			req.Token = tok
			count("AcquireShared "+tok, 1, func() error {
				res, err := d.AcquireShared(ctx, req)
				if err == nil && !res.Acquired {
					err = fmt.Errorf("refused: %+v", res)
				}
				return err
			})
		}
		req.Token = "c"
		count("refused AcquireShared", 1, func() error {
			res, err := d.AcquireShared(ctx, req)
			if err == nil && res.Acquired {
				err = fmt.Errorf("granted a third permit of limit 2")
			}
			return err
		})
		count("RefreshShared", 1, func() error { return d.RefreshShared(ctx, req.Key, "a", 10*time.Second) })
		count("Refresh of a permit", 2, func() error { return d.Refresh(ctx, req.Key, "a", 10*time.Second) })
		count("ReleaseShared a", 1, func() error { return d.ReleaseShared(ctx, req.Key, "a") })
		count("Release b", 2, func() error { return d.Release(ctx, req.Key, "b") })
		keys := []driver.Request{{Key: "rt-m1" + q, Token: "m", TTL: 10 * time.Second}, {Key: "rt-m2" + q, Token: "m", TTL: 10 * time.Second}}
		count("AcquireMany", 1, func() error {
			res, err := d.AcquireMany(ctx, keys)
			if err == nil && (!res[0].Acquired || !res[1].Acquired) {
				err = fmt.Errorf("refused: %+v", res)
			}
			return err
		})
	}
}

// TestSharedNoOversubscription: goroutines of several drivers (their own
// pools, as processes have) race for permits of one key of limit 2; an
// in-process count of the permits granted and not yet released never
// exceeds 2, and neither does Holders. A statement that judged the grants
// by a snapshot taken before it waited for the key's row would
// oversubscribe here.
func TestSharedNoOversubscription(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const (
		limit  = 2
		rounds = 30
		key    = "oversub"
	)
	var ds []driver.SharedLocker
	for range 3 {
		d, err := (&harness{url: pg.URL()}).MakeDriver(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ds = append(ds, d.(driver.SharedLocker))
	}
	var (
		mu             sync.Mutex
		held, most     int
		granted, stale atomic.Int64
		wg             sync.WaitGroup
	)
	for i, d := range ds {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range rounds {
					tok := fmt.Sprintf("t%d-%d-%d", i, g, n)
					res, err := d.AcquireShared(ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: tok, TTL: 10 * time.Second}, Limit: limit})
					if err != nil {
						t.Errorf("AcquireShared: %v", err)
						return
					}
					if !res.Acquired {
						stale.Add(1)
						continue
					}
					granted.Add(1)
					mu.Lock()
					held++
					most = max(most, held)
					mu.Unlock()
					h, err := d.Holders(ctx, key)
					if err != nil {
						t.Errorf("Holders: %v", err)
						return
					}
					if len(h.Holders) > limit {
						t.Errorf("Holders reports %d grants of limit %d", len(h.Holders), limit)
					}
					mu.Lock()
					held--
					mu.Unlock()
					if err := d.Release(ctx, key, tok); err != nil {
						t.Errorf("Release: %v", err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if most > limit {
		t.Fatalf("%d permits of limit %d were held at once", most, limit)
	}
	if granted.Load() == 0 || stale.Load() == 0 {
		t.Errorf("%d granted, %d refused: want both (contention)", granted.Load(), stale.Load())
	}
	h, err := ds[0].Holders(ctx, key)
	if err != nil || len(h.Holders) != 0 {
		t.Errorf("Holders after the race = %+v, %v; want none", h, err)
	}
}
