package mysqldlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestAcquireMany: AcquireMany's statements under the session settings
// that change how they are sent (server-side prepare, interpolation, ANSI
// quoting without backslash escapes): longest token and metadata with
// every byte value survive the multi-row INSERT and UPDATE; a key held by
// the marker of shared grants refuses the whole call with nothing
// written, reporting the shortest shared lease; too many keys or bytes are
// refused with errors.ErrUnsupported before anything is sent; and racing
// calls over missing keys never grant one key twice.
func TestAcquireMany(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	sessions := []struct {
		name string
		edit func(*mysql.Config)
	}{
		{"prepared", func(*mysql.Config) {}},
		{"interpolated", func(c *mysql.Config) { c.InterpolateParams = true }},
		{"ansi, no backslash escapes", func(c *mysql.Config) {
			c.InterpolateParams = true
			c.Params = map[string]string{"sql_mode": "'ANSI,NO_BACKSLASH_ESCAPES'"}
		}},
	}
	for n, sess := range sessions {
		t.Run(sess.name, func(t *testing.T) {
			cfg := srv.Config()
			sess.edit(cfg)
			db, err := openDB(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			l, err := NewDriver(ctx, db, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			testAcquireMany(t, ctx, l.(*myDriver), fmt.Sprintf("many%d/", n))
		})
	}
}

func testAcquireMany(t *testing.T, ctx context.Context, d *myDriver, prefix string) {
	var all []byte
	for i := range 256 {
		all = append(all, byte(i))
	}
	longMeta := strings.Repeat(string(all)+`'"\`, maxMetadata/259+1)[:maxMetadata]
	longToken := strings.Repeat(`t'\"`+"\x00", maxToken/5+1)[:maxToken]
	const ttl = 10 * time.Second
	keys := []string{prefix + "c", prefix + "a", prefix + "b"}
	rowCount := func(key string) int {
		t.Helper()
		var n int
		if err := d.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM dlock_locks WHERE `key` = ?", []byte(key)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// c has a row (fence 1, released); a and b have none.
	if r, err := d.Acquire(ctx, driver.Request{Key: keys[0], Token: "first", TTL: ttl}); err != nil || !r.Acquired || r.Fence != 1 {
		t.Fatalf("Acquire = %+v, %v", r, err)
	}
	if err := d.Release(ctx, keys[0], "first"); err != nil {
		t.Fatal(err)
	}
	reqs := []driver.Request{
		{Key: keys[0], Token: longToken, TTL: ttl, Metadata: longMeta},
		{Key: keys[1], Token: "tok-a", TTL: ttl, Metadata: longMeta},
		{Key: keys[2], Token: "tok-b", TTL: ttl},
	}
	res, err := d.AcquireMany(ctx, reqs)
	if err != nil || len(res) != 3 {
		t.Fatalf("AcquireMany = %+v, %v", res, err)
	}
	for i, want := range []uint64{2, 1, 1} {
		if !res[i].Acquired || res[i].Fence != want {
			t.Errorf("AcquireMany: %q = %+v, want granted with fence %d", keys[i], res[i], want)
		}
		in, err := d.Inspect(ctx, keys[i])
		if err != nil || !in.Held || in.Fence != want || in.Metadata != reqs[i].Metadata || in.TTL <= ttl/2 || in.TTL > ttl {
			t.Errorf("Inspect(%q) = held %v, fence %d, TTL %v, %d bytes of metadata, %v; want held, fence %d, metadata as sent",
				keys[i], in.Held, in.Fence, in.TTL, len(in.Metadata), err, want)
		}
	}
	if err := d.Refresh(ctx, keys[0], longToken, ttl); err != nil {
		t.Errorf("Refresh with the longest token: %v", err)
	}

	// Renewed by the same tokens: the same fences, the new metadata.
	reqs[0].Metadata, reqs[1].Metadata, reqs[2].Metadata = "", "renewed", longMeta
	res, err = d.AcquireMany(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint64{2, 1, 1} {
		in, err := d.Inspect(ctx, keys[i])
		if !res[i].Acquired || res[i].Fence != want || err != nil || in.Fence != want || in.Metadata != reqs[i].Metadata {
			t.Errorf("renewing %q = %+v, Inspect fence %d, %d bytes of metadata, %v; want fence %d, metadata as sent",
				keys[i], res[i], in.Fence, len(in.Metadata), err, want)
		}
	}
	for i, r := range reqs {
		if err := d.Release(ctx, r.Key, r.Token); err != nil {
			t.Errorf("Release(%q): %v", keys[i], err)
		}
	}

	// A key held by shared grants (the marker) refuses the whole call:
	// the missing key gets no row, the free one keeps its fence.
	shared, missing, free := prefix+"shared", prefix+"missing", keys[1]
	for _, g := range []struct {
		token string
		ttl   time.Duration
	}{{"reader-long", 30 * time.Second}, {"reader-short", 5 * time.Second}} {
		r, err := d.AcquireShared(ctx, driver.SharedRequest{Request: driver.Request{Key: shared, Token: g.token, TTL: g.ttl}})
		if err != nil || !r.Acquired {
			t.Fatalf("AcquireShared = %+v, %v", r, err)
		}
	}
	res, err = d.AcquireMany(ctx, []driver.Request{
		{Key: missing, Token: "w", TTL: ttl},
		{Key: shared, Token: "w", TTL: ttl},
		{Key: free, Token: "w", TTL: ttl},
	})
	if err != nil || len(res) != 3 {
		t.Fatalf("AcquireMany beside shared grants = %+v, %v", res, err)
	}
	if res[0] != (driver.Result{}) || res[2] != (driver.Result{}) {
		t.Errorf("AcquireMany beside shared grants: the other keys = %+v, %+v; want not acquired, no holder", res[0], res[2])
	}
	if res[1].Acquired || res[1].HolderTTL <= 0 || res[1].HolderTTL > 5*time.Second {
		t.Errorf("AcquireMany beside shared grants: the shared key = %+v; want refused with the shortest shared lease (at most 5s)", res[1])
	}
	if n := rowCount(missing); n != 0 {
		t.Errorf("the refused call left %d rows of the missing key, want none", n)
	}
	if in, err := d.Inspect(ctx, free); err != nil || in.Held || in.Fence != 1 {
		t.Errorf("Inspect(free key) after the refused call = %+v, %v; want free with fence 1", in, err)
	}
	if h, err := d.Holders(ctx, shared); err != nil || len(h.Holders) != 2 {
		t.Errorf("Holders(shared) after the refused call = %+v, %v; want the two grants", h, err)
	}

	// Limits: refused before anything is sent.
	many := make([]driver.Request, multiRows+1)
	for i := range many {
		many[i] = driver.Request{Key: fmt.Sprintf("%sbig/%04d", prefix, i), Token: "x", TTL: ttl}
	}
	if _, err := d.AcquireMany(ctx, many); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("AcquireMany of %d keys = %v, want ErrUnsupported", len(many), err)
	}
	heavy := make([]driver.Request, 20)
	for i := range heavy {
		heavy[i] = driver.Request{Key: fmt.Sprintf("%sheavy/%d", prefix, i), Token: "x", TTL: ttl, Metadata: longMeta}
	}
	if _, err := d.AcquireMany(ctx, heavy); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("AcquireMany of %d KiB = %v, want ErrUnsupported", 20*maxMetadata/1024, err)
	}
	if n := rowCount(many[0].Key) + rowCount(heavy[0].Key); n != 0 {
		t.Errorf("refused calls left %d rows, want none", n)
	}
	if res, err := d.AcquireMany(ctx, nil); err != nil || len(res) != 0 {
		t.Errorf("AcquireMany of no keys = %+v, %v; want no results", res, err)
	}

	// Racing calls over missing keys: each grant is a key's only holder,
	// with a fence no other grant of the key had.
	var (
		mu     sync.Mutex
		fences = map[string]map[uint64]bool{}
		wg     sync.WaitGroup
	)
	for w := range 6 {
		wg.Go(func() {
			for round := range 10 {
				var rs []driver.Request
				for j := range 4 {
					if (j+w)%4 != 0 { // fresh keys each round, three of four per call
						k := fmt.Sprintf("%srace/%d/%d", prefix, round, j)
						rs = append(rs, driver.Request{Key: k, Token: fmt.Sprintf("w%d.%d", w, round), TTL: ttl})
					}
				}
				res, err := d.AcquireMany(ctx, rs)
				if err != nil {
					t.Errorf("racing AcquireMany: %v", err)
					return
				}
				if !res[0].Acquired {
					continue
				}
				mu.Lock()
				for j, r := range res {
					if fences[rs[j].Key] == nil {
						fences[rs[j].Key] = map[uint64]bool{}
					}
					if !r.Acquired || fences[rs[j].Key][r.Fence] {
						t.Errorf("racing AcquireMany: %q = %+v; want granted with a fence of its own", rs[j].Key, r)
					}
					fences[rs[j].Key][r.Fence] = true
				}
				mu.Unlock()
				for _, r := range rs {
					if err := d.Release(ctx, r.Key, r.Token); err != nil {
						t.Errorf("Release(%q): %v", r.Key, err)
					}
				}
			}
		})
	}
	wg.Wait()
	granted := 0
	for _, fs := range fences {
		granted += len(fs)
	}
	if granted == 0 {
		t.Error("racing AcquireMany granted nothing")
	}
}
