package mysqldlock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

func openClient(t *testing.T, ctx context.Context, url string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	c, err := dlock.Open(ctx, url, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func dbClient(t *testing.T, ctx context.Context, cfg *mysql.Config) *dlock.Client {
	t.Helper()
	db, err := openDB(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c, err := NewClient(ctx, db, Options{})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestMariaDB(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	// The grant sequence must come out the same whatever the application's
	// connection settings: affected-rows flavour, prepared or interpolated
	// statements, and MariaDB's simultaneous UPDATE assignment.
	sessions := []struct {
		name string
		edit func(*mysql.Config)
	}{
		{"defaults (server-side prepare)", func(*mysql.Config) {}},
		{"interpolated", func(c *mysql.Config) { c.InterpolateParams = true }},
		{"client found rows", func(c *mysql.Config) { c.ClientFoundRows = true }},
		{"simultaneous assignment", func(c *mysql.Config) {
			c.Params = map[string]string{"sql_mode": "'STRICT_TRANS_TABLES,SIMULTANEOUS_ASSIGNMENT'"}
		}},
		{"ansi, no backslash escapes", func(c *mysql.Config) {
			c.InterpolateParams = true
			c.Params = map[string]string{"sql_mode": "'ANSI,NO_BACKSLASH_ESCAPES'"}
		}},
	}
	for _, s := range sessions {
		t.Run("grants/"+s.name, func(t *testing.T) {
			cfg := srv.Config()
			s.edit(cfg)
			a, b := dbClient(t, ctx, cfg), dbClient(t, ctx, cfg)
			key := "grants-" + s.name + "-\\'\x00\"`"
			la, err := a.TryLock(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if la.Fence() != 1 {
				t.Errorf("first fence = %d, want 1", la.Fence())
			}
			if _, err := b.TryLock(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
				t.Fatalf("TryLock of a held key = %v, want ErrNotAcquired", err)
			}
			if err := la.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			lb, err := b.TryLock(ctx, key, dlock.WithToken("tok-b"), dlock.WithTTL(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if lb.Fence() != 2 {
				t.Errorf("second fence = %d, want 2", lb.Fence())
			}
			lb2, err := a.TryLock(ctx, key, dlock.WithToken("tok-b"), dlock.WithTTL(time.Minute))
			if err != nil || lb2.Fence() != 2 {
				t.Fatalf("re-acquire with the holder's token = %v, %v; want fence 2", lb2, err)
			}
			if err := lb.Refresh(ctx, 0); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if _, err := a.TryLock(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
				t.Fatalf("TryLock of a re-acquired key = %v, want ErrNotAcquired", err)
			}
			in, err := a.Inspect(ctx, key)
			if err != nil || !in.Held || in.Fence != 2 || in.TTL <= 50*time.Second {
				t.Fatalf("Inspect = %+v, %v; want held, fence 2, about a minute left", in, err)
			}
			if err := lb2.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			// A lapsed lease is taken over with the next fence.
			lc, err := a.TryLock(ctx, key, dlock.WithTTL(50*time.Millisecond), dlock.WithAutoRefresh(false))
			if err != nil || lc.Fence() != 3 {
				t.Fatalf("third grant = %v, %v; want fence 3", lc, err)
			}
			time.Sleep(100 * time.Millisecond)
			if err := lc.Refresh(ctx, 0); !errors.Is(err, dlock.ErrNotHeld) {
				t.Fatalf("Refresh of a lapsed lease = %v, want ErrNotHeld", err)
			}
			ld, err := b.TryLock(ctx, key)
			if err != nil || ld.Fence() != 4 {
				t.Fatalf("takeover = %v, %v; want fence 4", ld, err)
			}
			if err := ld.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("table shape", func(t *testing.T) {
		openClient(t, ctx, srv.URL())
		root, err := srv.RootDB()
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		rows, err := root.QueryContext(ctx, `SELECT column_name, column_type FROM information_schema.columns
			WHERE table_schema = 'dlock' AND table_name = 'dlock_locks' ORDER BY ordinal_position`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var n, ty string
			if err := rows.Scan(&n, &ty); err != nil {
				t.Fatal(err)
			}
			got = append(got, n+" "+ty)
		}
		want := []string{"key varbinary(1024)", "token varbinary(1024)", "fence bigint(20) unsigned", "expires_at datetime(6)", "metadata blob"}
		if len(got) != len(want) {
			t.Fatalf("columns = %q, want %q", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("column %d = %q, want %q", i, got[i], want[i])
			}
		}
	})

	t.Run("same client waiter woken by release", func(t *testing.T) {
		c := openClient(t, ctx, srv.URL())
		l, err := c.TryLock(ctx, "local-wake", dlock.WithTTL(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			l, err := c.Lock(wctx, "local-wake", dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
			if err == nil {
				err = l.Unlock(ctx)
			}
			got <- err
		}()
		time.Sleep(200 * time.Millisecond)
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("waiter: %v", err)
		}
	})
}
