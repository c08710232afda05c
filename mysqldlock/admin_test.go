package mysqldlock

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

func TestAdmin(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	openDriver := func(t *testing.T, url string) *myDriver {
		t.Helper()
		u, err := driver.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		d, err := OpenURL(ctx, u)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d.(*myDriver)
	}

	t.Run("list is bytewise", func(t *testing.T) {
		// Keys a case-insensitive or PAD SPACE collation would fold
		// together or sort otherwise, and LIKE characters.
		keys := []string{"a", "A", "a ", "a\t", "a\x00", "a\x00b", "ab", "aB", "a%", "a_", `a\`, "caf\u00e9", "cafe\u0301", "b"}
		url := srv.URL() + "?table=admin_list"
		for _, name := range []string{"url", "database_sql"} {
			t.Run(name, func(t *testing.T) {
				var c *dlock.Client
				if name == "url" {
					c = openClient(t, ctx, url)
				} else {
					cfg := srv.Config()
					db, err := openDB(cfg)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { db.Close() })
					if c, err = NewClient(ctx, db, Options{Table: "admin_list_db"}); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = c.Close() })
				}
				for _, k := range keys {
					if _, err := c.TryLock(ctx, k, dlock.WithTTL(time.Minute), dlock.WithMetadata("m="+k)); err != nil {
						t.Fatalf("TryLock(%q): %v", k, err)
					}
				}
				// Ran out on the server's clock; its row still names a token.
				if _, err := c.TryLock(ctx, "a-expired", dlock.WithTTL(20*time.Millisecond), dlock.WithAutoRefresh(false)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond)
				for _, prefix := range []string{"", "a", "A", "a ", "a\x00", "a%", "a_", `a\`, "caf", "cafe", "none"} {
					var want []string
					for _, k := range keys {
						if strings.HasPrefix(k, prefix) {
							want = append(want, k)
						}
					}
					slices.Sort(want)
					infos, err := c.List(ctx, prefix)
					if err != nil {
						t.Fatalf("List(%q): %v", prefix, err)
					}
					var got []string
					for _, in := range infos {
						got = append(got, in.Key)
						if !in.Held || in.Metadata != "m="+in.Key || in.TTL <= 0 || in.TTL > time.Minute || in.Fence == 0 {
							t.Errorf("List(%q): %q = %+v, want held, metadata %q, fence > 0, 0 < TTL <= 1m", prefix, in.Key, in, "m="+in.Key)
						}
					}
					if !slices.Equal(got, want) {
						t.Errorf("List(%q) = %q, want %q", prefix, got, want)
					}
				}
			})
		}
	})

	t.Run("list scans a range of the primary key", func(t *testing.T) {
		d := openDriver(t, srv.URL()+"?table=admin_list")
		rows, err := d.db.QueryContext(ctx, "EXPLAIN "+d.st.list, []byte("a"), []byte("b"), 100)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		n := 0
		for rows.Next() {
			n++
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			plan := map[string]string{}
			for i, c := range cols {
				if b, ok := vals[i].([]byte); ok {
					plan[c] = string(b)
				}
			}
			if plan["type"] != "range" || plan["key"] != "PRIMARY" || strings.Contains(plan["Extra"], "filesort") {
				t.Errorf("plan of the list statement = %v, want a range of PRIMARY without a filesort", plan)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Error("EXPLAIN of the list statement returned no plan")
		}
	})

	t.Run("list refuses a key column that is not binary", func(t *testing.T) {
		// A table made by hand with a case-insensitive text key: its
		// order is not bytewise, and List says so.
		db, err := openDB(srv.Config())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		_, err = db.ExecContext(ctx, "CREATE TABLE admin_ci (\n"+
			"`key` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL PRIMARY KEY,\n"+
			"token VARBINARY(1024) NOT NULL DEFAULT '', fence BIGINT UNSIGNED NOT NULL DEFAULT 0,\n"+
			"expires_at DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00', metadata BLOB NOT NULL) ENGINE=InnoDB")
		if err != nil {
			t.Fatal(err)
		}
		_, err = db.ExecContext(ctx, "INSERT INTO admin_ci VALUES ('a', 't1', 1, UTC_TIMESTAMP(6) + INTERVAL 1 MINUTE, ''), ('B', 't2', 1, UTC_TIMESTAMP(6) + INTERVAL 1 MINUTE, '')")
		if err != nil {
			t.Fatal(err)
		}
		// With create_table=false the companion table must exist too.
		if _, err := db.ExecContext(ctx, strings.NewReplacer("{S}", "admin_ci_shares").Replace(sqlCreateShares)); err != nil {
			t.Fatal(err)
		}
		d := openDriver(t, srv.URL()+"?table=admin_ci&create_table=false")
		got, err := d.List(ctx, "")
		if err == nil || !strings.Contains(err.Error(), "bytewise") || errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("List over a case-insensitive key column = %+v, %v; want an error about bytewise order, not ErrUnavailable", got, err)
		}
	})

	t.Run("force release wakes a waiter of the driver", func(t *testing.T) {
		// MySQL has no notifications between connections: the waiter
		// shares the operator's client. The holder's lease and the
		// waiter's backoff are an hour, so only the wake-up can get it
		// the key within its deadline.
		a, op := openClient(t, ctx, srv.URL()), openClient(t, ctx, srv.URL())
		drivertest.CheckForceUnlockWakes(ctx, t, a, op, op, "wake", 200*time.Millisecond)
	})

	t.Run("force release waits for a write in flight", func(t *testing.T) {
		// Another transaction changes the row between ForceRelease's read
		// and its UPDATE: the UPDATE waits for it and then changes
		// nothing, and ForceRelease frees (or not) what is there after
		// the commit, never the holder it replaced.
		admin, err := openDB(srv.Config())
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		d := openDriver(t, srv.URL())
		for _, tc := range []struct {
			name   string
			change string
			want   driver.Info // Held, Fence offset from the first grant, Metadata
		}{
			{"released", "UPDATE dlock_locks SET token = '', expires_at = UTC_TIMESTAMP(6), metadata = '' WHERE `key` = ?", driver.Info{}},
			{"taken by another", "UPDATE dlock_locks SET token = 'other', fence = fence + 1, metadata = 'm2' WHERE `key` = ?", driver.Info{Held: true, Fence: 1, Metadata: "m2"}},
		} {
			key := "inflight-" + tc.name
			r, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t1", TTL: time.Minute, Metadata: "m1"})
			if err != nil || !r.Acquired {
				t.Fatalf("%s: Acquire = %+v, %v", tc.name, r, err)
			}
			tx, err := admin.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, tc.change, []byte(key)); err != nil {
				t.Fatal(err)
			}
			type result struct {
				in  driver.Info
				err error
			}
			done := make(chan result, 1)
			go func() {
				in, err := d.ForceRelease(ctx, key)
				done <- result{in, err}
			}()
			select {
			case r := <-done:
				t.Fatalf("%s: ForceRelease = %+v, %v while another transaction holds the row; want it to wait", tc.name, r.in, r.err)
			case <-time.After(300 * time.Millisecond):
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: ForceRelease still waiting 10 s after the other transaction committed", tc.name)
			}
			want := tc.want
			want.Fence += r.Fence
			if res.err != nil || res.in.Held != want.Held || res.in.Fence != want.Fence || res.in.Metadata != want.Metadata {
				t.Errorf("%s: ForceRelease = %+v, %v; want %+v", tc.name, res.in, res.err, want)
			}
			if in, err := d.Inspect(ctx, key); err != nil || in.Held {
				t.Errorf("%s: Inspect after ForceRelease = %+v, %v; want not held", tc.name, in, err)
			}
		}
	})

	sessions := []struct {
		name string
		edit func(*mysql.Config)
	}{
		{"prepared", func(*mysql.Config) {}},
		{"interpolated, found rows", func(c *mysql.Config) { c.InterpolateParams, c.ClientFoundRows = true, true }},
	}
	for _, s := range sessions {
		t.Run("driver contract/"+s.name, func(t *testing.T) {
			cfg := srv.Config()
			s.edit(cfg)
			db, err := openDB(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			d, err := NewDriver(ctx, db, Options{Table: "admin_contract"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Close() })
			testForceReleaseDriver(t, ctx, d, s.name+"/")
		})
	}
}

// testForceReleaseDriver checks the driver's contract directly: the freed
// holder's Refresh, RefreshBatch and Release all say ErrNotHeld, the fence
// survives and increases, a free key gives Held false, and empty metadata
// is freed too.
func testForceReleaseDriver(t *testing.T, ctx context.Context, d driver.Locker, prefix string) {
	t.Helper()
	fr := d.(driver.ForceReleaser)
	for _, meta := range []string{"m1", ""} {
		key := prefix + "k" + meta
		r, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t1", TTL: time.Minute, Metadata: meta})
		if err != nil || !r.Acquired {
			t.Fatalf("Acquire = %+v, %v", r, err)
		}
		in, err := fr.ForceRelease(ctx, key)
		if err != nil || !in.Held || in.Fence != r.Fence || in.Metadata != meta || in.TTL <= 0 || in.TTL > time.Minute {
			t.Fatalf("ForceRelease = %+v, %v; want held, fence %d, metadata %q, 0 < TTL <= 1m", in, err, r.Fence, meta)
		}
		if err := d.Refresh(ctx, key, "t1", time.Minute); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("the freed holder's Refresh = %v, want ErrNotHeld", err)
		}
		errs := d.(driver.BatchRefresher).RefreshBatch(ctx, []driver.RefreshRequest{{Key: key, Token: "t1", TTL: time.Minute}})
		if len(errs) != 1 || !errors.Is(errs[0], driver.ErrNotHeld) {
			t.Errorf("the freed holder's RefreshBatch = %v, want [ErrNotHeld]", errs)
		}
		if err := d.Release(ctx, key, "t1"); !errors.Is(err, driver.ErrNotHeld) {
			t.Errorf("the freed holder's Release = %v, want ErrNotHeld", err)
		}
		in, err = fr.ForceRelease(ctx, key)
		if err != nil || in.Held || in.Fence != r.Fence {
			t.Errorf("ForceRelease of a free key = %+v, %v; want not held, fence %d, nil", in, err, r.Fence)
		}
		r2, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t2", TTL: time.Minute})
		if err != nil || !r2.Acquired || r2.Fence <= r.Fence {
			t.Fatalf("Acquire after ForceRelease = %+v, %v; want acquired with fence above %d", r2, err, r.Fence)
		}
		if err := d.Refresh(ctx, key, "t2", time.Minute); err != nil {
			t.Errorf("the new holder's Refresh: %v", err)
		}
	}
	in, err := fr.ForceRelease(ctx, prefix+"never-taken")
	if err != nil || in.Held || in.Fence != 0 {
		t.Errorf("ForceRelease of a key never taken = %+v, %v; want not held, fence 0, nil", in, err)
	}
}
