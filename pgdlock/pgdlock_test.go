package pgdlock

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

func TestPostgres(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	t.Run("metadata is cleaned", func(t *testing.T) {
		c := openClient(t, ctx, pg.URL())
		l, err := c.TryLock(ctx, "meta", dlock.WithMetadata("host=a\x00b bad=\xff"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock(ctx)
		in, err := c.Inspect(ctx, "meta")
		if err != nil {
			t.Fatal(err)
		}
		if want := "host=a\uFFFDb bad=\uFFFD"; in.Metadata != want {
			t.Errorf("metadata = %q, want %q", in.Metadata, want)
		}
	})

	t.Run("fence survives release", func(t *testing.T) {
		c := openClient(t, ctx, pg.URL())
		var last uint64
		for range 3 {
			l, err := c.TryLock(ctx, "fence-kept")
			if err != nil {
				t.Fatal(err)
			}
			if l.Fence() <= last {
				t.Fatalf("fence %d after %d", l.Fence(), last)
			}
			last = l.Fence()
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			in, err := c.Inspect(ctx, "fence-kept")
			if err != nil || in.Held || in.Fence != last || in.Metadata != "" {
				t.Fatalf("Inspect after release = %+v, %v; want free with fence %d", in, err, last)
			}
		}
	})

	// A waiter whose backoff and whose holder's lease are both far longer
	// than the test's deadline can only be woken by the release
	// notification.
	for _, viaDB := range []bool{false, true} {
		name := "notification wakes waiter (pgxpool)"
		if viaDB {
			name = "notification wakes waiter (database/sql)"
		}
		t.Run(name, func(t *testing.T) {
			holder := openClient(t, ctx, pg.URL())
			var waiter *dlock.Client
			if viaDB {
				db, err := openDB(pg.URL())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				waiter, err = NewClientDB(ctx, db, Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = waiter.Close() })
			} else {
				waiter = openClient(t, ctx, pg.URL())
			}
			key := "notified-" + name
			l, err := holder.TryLock(ctx, key, dlock.WithTTL(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			const waiters = 3
			got := make(chan error, waiters)
			for range waiters {
				go func() {
					wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					defer cancel()
					l, err := waiter.Lock(wctx, key, dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
					if err == nil {
						err = l.Unlock(ctx)
					}
					got <- err
				}()
			}
			time.Sleep(300 * time.Millisecond) // let them wait
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			for range waiters {
				if err := <-got; err != nil {
					t.Fatalf("waiter: %v", err)
				}
			}
		})
	}

	t.Run("table shape", func(t *testing.T) {
		openClient(t, ctx, pg.URL())
		admin, err := pgx.Connect(ctx, pg.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(context.Background())
		rows, err := admin.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
			WHERE table_name = 'dlock_locks' ORDER BY ordinal_position`)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var n, ty string
			if err := rows.Scan(&n, &ty); err != nil {
				t.Fatal(err)
			}
			got = append(got, n+" "+ty)
		}
		want := []string{"key bytea", "token bytea", "fence bigint", "expires_at timestamp with time zone", "metadata text"}
		if len(got) != len(want) {
			t.Fatalf("columns = %q, want %q", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("column %d = %q, want %q", i, got[i], want[i])
			}
		}
	})
}
