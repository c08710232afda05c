package mysqldlock

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease/sqlleasetest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestShared: RefreshBatch, List and ForceRelease with shared grants; a
// lock table made before shared leases, opened with create_table=false, is
// refused with an error naming the missing companion table, and works
// once the documented DDL made it.
func TestShared(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	u, err := driver.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenURL(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sqlleasetest.RunSharedAdminTest(t, ctx, d, "adm/")

	db := d.(*myDriver).db
	if _, err := db.ExecContext(ctx, "CREATE TABLE old_locks (\n"+
		"\t`key`      VARBINARY(1024) NOT NULL,\n"+
		"\ttoken      VARBINARY(1024) NOT NULL DEFAULT '',\n"+
		"\tfence      BIGINT UNSIGNED NOT NULL DEFAULT 0,\n"+
		"\texpires_at DATETIME(6)     NOT NULL DEFAULT '1970-01-01 00:00:00',\n"+
		"\tmetadata   BLOB            NOT NULL,\n"+
		"\tPRIMARY KEY (`key`)\n"+
		") ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO old_locks (`key`, fence, metadata) VALUES ('kept', 7, '')"); err != nil {
		t.Fatal(err)
	}
	raw := srv.URL() + "?table=old_locks&create_table=false"
	_, err = dlock.Open(ctx, raw)
	if err == nil || errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "old_locks_shares") {
		t.Fatalf("Open without the companion table = %v, want an error naming old_locks_shares, not ErrUnavailable", err)
	}
	// The DDL of docs/sql.md.
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS old_locks_shares (\n"+
		"\t`key`       VARBINARY(1024) NOT NULL,\n"+
		"\twriter      TINYINT(1)      NOT NULL DEFAULT 0,\n"+
		"\ttoken       VARBINARY(1024) NOT NULL,\n"+
		"\tfence       BIGINT UNSIGNED NOT NULL DEFAULT 0,\n"+
		"\texpires_at  DATETIME(6)     NOT NULL,\n"+
		"\tmetadata    BLOB            NOT NULL,\n"+
		"\tshare_limit INT             NOT NULL DEFAULT 0,\n"+
		"\tPRIMARY KEY (`key`, writer, token)\n"+
		") ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	old, err := dlock.Open(ctx, raw)
	if err != nil {
		t.Fatalf("Open after the upgrade: %v", err)
	}
	defer old.Close()
	p, err := old.Semaphore("kept", 2).TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.Fence() != 8 {
		t.Errorf("permit's fence = %d, want 8 (the old row's counter 7, plus one)", p.Fence())
	}
	if err := p.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSharedRace: drivers with their own pools never grant beside what
// they exclude.
func TestSharedRace(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	u, err := driver.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	ds := openDrivers(t, ctx, u, 3)
	sqlleasetest.RunSharedRace(t, ctx, ds, "race")
}

// countingConnector counts the round trips of its connections: each
// statement sent (with client-side interpolation, one round trip each),
// transaction start, commit and rollback, and prepare.
type countingConnector struct {
	sqldriver.Connector
	trips, prepares *atomic.Int64
}

// mysqlConn is what go-sql-driver's connections implement.
type mysqlConn interface {
	sqldriver.Conn
	sqldriver.ConnBeginTx
	sqldriver.ConnPrepareContext
	sqldriver.ExecerContext
	sqldriver.QueryerContext
	sqldriver.Pinger
	sqldriver.SessionResetter
	sqldriver.Validator
	sqldriver.NamedValueChecker
}

func (c countingConnector) Connect(ctx context.Context) (sqldriver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{mysqlConn: conn.(mysqlConn), c: c}, nil
}

type countingConn struct {
	mysqlConn
	c countingConnector
}

func (cc *countingConn) ExecContext(ctx context.Context, q string, args []sqldriver.NamedValue) (sqldriver.Result, error) {
	res, err := cc.mysqlConn.ExecContext(ctx, q, args)
	if err != sqldriver.ErrSkip {
		cc.c.trips.Add(1)
	}
	return res, err
}

func (cc *countingConn) QueryContext(ctx context.Context, q string, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	rows, err := cc.mysqlConn.QueryContext(ctx, q, args)
	if err != sqldriver.ErrSkip {
		cc.c.trips.Add(1)
	}
	return rows, err
}

func (cc *countingConn) PrepareContext(ctx context.Context, q string) (sqldriver.Stmt, error) {
	cc.c.prepares.Add(1)
	return cc.mysqlConn.PrepareContext(ctx, q)
}

func (cc *countingConn) Prepare(q string) (sqldriver.Stmt, error) {
	cc.c.prepares.Add(1)
	return cc.mysqlConn.Prepare(q)
}

func (cc *countingConn) Ping(ctx context.Context) error {
	cc.c.trips.Add(1)
	return cc.mysqlConn.Ping(ctx)
}

func (cc *countingConn) BeginTx(ctx context.Context, opts sqldriver.TxOptions) (sqldriver.Tx, error) {
	cc.c.trips.Add(1)
	tx, err := cc.mysqlConn.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return countingTx{tx, cc.c.trips}, nil
}

func (cc *countingConn) Begin() (sqldriver.Tx, error) {
	return cc.BeginTx(context.Background(), sqldriver.TxOptions{})
}

type countingTx struct {
	sqldriver.Tx
	trips *atomic.Int64
}

func (t countingTx) Commit() error   { t.trips.Add(1); return t.Tx.Commit() }
func (t countingTx) Rollback() error { t.trips.Add(1); return t.Tx.Rollback() }

// countingDriver opens a driver over cfg (with client-side interpolation,
// as URLs have) whose round trips trips counts.
func countingDriver(t *testing.T, ctx context.Context, cfg *mysql.Config) (*myDriver, *atomic.Int64) {
	t.Helper()
	cfg.InterpolateParams = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var trips, prepares atomic.Int64
	db := sql.OpenDB(countingConnector{Connector: conn, trips: &trips, prepares: &prepares})
	t.Cleanup(func() {
		db.Close()
		if n := prepares.Load(); n > 0 {
			t.Errorf("%d statements were prepared on the server: round trips not counted", n)
		}
	})
	d, err := NewDriver(ctx, db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d.(*myDriver), &trips
}

// TestSharedRoundTrips: what a shared acquire and release cost, counted
// at the connection. A permit of a free key (a row that exists) is one
// transaction of two statements, 4 round trips, as a renewal; the first
// grant of a new key the same; a grant that finds lapsed shared rows one
// more, which deletes them. A refusal is the same transaction rolled back
// and one SELECT. Releasing a permit is the exclusive UPDATE (which finds
// nothing), one DELETE and one UPDATE, 3 round trips. A mutex Acquire of a
// free key is one.
func TestSharedRoundTrips(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// The same on any session settings: the affected-rows flavour,
	// MariaDB's simultaneous UPDATE assignment, READ COMMITTED.
	for _, s := range []struct {
		name string
		edit func(*mysql.Config)
	}{
		{"defaults", func(*mysql.Config) {}},
		{"client found rows", func(c *mysql.Config) { c.ClientFoundRows = true }},
		{"simultaneous assignment", func(c *mysql.Config) {
			c.Params = map[string]string{"sql_mode": "'STRICT_TRANS_TABLES,SIMULTANEOUS_ASSIGNMENT'"}
		}},
		{"read committed", func(c *mysql.Config) { c.Params = map[string]string{"tx_isolation": "'READ-COMMITTED'"} }},
	} {
		t.Run(s.name, func(t *testing.T) {
			cfg := srv.Config()
			s.edit(cfg)
			d, trips := countingDriver(t, ctx, cfg)
			sharedRoundTrips(t, ctx, d, trips, s.name+"/")
		})
	}
}

func sharedRoundTrips(t *testing.T, ctx context.Context, d *myDriver, trips *atomic.Int64, prefix string) {
	cost := func(what string, want int64, fn func() error) {
		t.Helper()
		before := trips.Load()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := trips.Load() - before; got != want {
			t.Errorf("%s: %d round trips, want %d", what, got, want)
		}
	}
	const ttl = 10 * time.Second
	share := func(key, token string, ttl time.Duration, limit int) (driver.Result, error) {
		return d.AcquireShared(ctx, driver.SharedRequest{Request: driver.Request{Key: prefix + key, Token: token, TTL: ttl, Metadata: token}, Limit: limit})
	}
	fences := map[string]uint64{}
	var last uint64
	// granted wants a permit with the next fence, or for a renewal the
	// token's fence.
	granted := func(key, token string, ttl time.Duration, limit int) func() error {
		return func() error {
			res, err := share(key, token, ttl, limit)
			switch f, renewal := fences[key+token]; {
			case err != nil:
			case !res.Acquired:
				err = fmt.Errorf("not granted: %+v", res)
			case renewal && res.Fence != f:
				err = fmt.Errorf("renewal's fence %d, want %d", res.Fence, f)
			case !renewal && res.Fence <= last:
				err = fmt.Errorf("fence %d, want more than %d", res.Fence, last)
			}
			if err == nil {
				fences[key+token], last = res.Fence, max(last, res.Fence)
			}
			return err
		}
	}
	released := func(key, token string) func() error {
		return func() error { delete(fences, key+token); return d.Release(ctx, prefix+key, token) }
	}

	mutex := func() error {
		res, err := d.Acquire(ctx, driver.Request{Key: prefix + "sem", Token: "m", TTL: ttl})
		if err == nil && (!res.Acquired || res.Fence <= last) {
			err = fmt.Errorf("= %+v, want granted with a fence above %d", res, last)
		}
		last = max(last, res.Fence)
		return err
	}
	cost("mutex Acquire of a new key", 2, mutex)
	cost("mutex Release", 1, released("sem", "m"))
	cost("mutex Acquire of a free key", 1, mutex)
	cost("mutex Release", 1, released("sem", "m"))

	cost("permit of a new key", 4, granted("sem", "a", ttl, 3))
	cost("release of the permit", 3, released("sem", "a"))
	cost("permit of a free key", 4, granted("sem", "a", ttl, 3))
	cost("second permit", 4, granted("sem", "b", ttl, 3))
	cost("renewal of a permit", 4, granted("sem", "a", ttl, 3))
	cost("third permit", 4, granted("sem", "c", ttl, 3))
	cost("refused permit", 4, func() error {
		res, err := share("sem", "d", ttl, 3)
		if err == nil && (res.Acquired || res.HolderTTL <= ttl/2) {
			err = fmt.Errorf("= %+v, want refused with a holder lease of about %v", res, ttl)
		}
		return err
	})
	cost("permit of another limit", 4, func() error {
		if _, err := share("sem", "d", ttl, 4); !errors.Is(err, driver.ErrLimitMismatch) {
			return fmt.Errorf("= %v, want ErrLimitMismatch", err)
		}
		return nil
	})
	for _, tok := range []string{"a", "b", "c"} {
		cost("release of permit "+tok, 3, released("sem", tok))
	}
	cost("mutex after the permits", 1, mutex)
	cost("mutex Release", 1, released("sem", "m"))
	cost("release of a released permit", 3, func() error {
		if err := d.Release(ctx, prefix+"sem", "a"); !errors.Is(err, driver.ErrNotHeld) {
			return fmt.Errorf("= %v, want ErrNotHeld", err)
		}
		return nil
	})

	// A holder that vanished frees its permit at its TTL; the next grant
	// deletes its row.
	last = 0 // another key
	cost("short permit", 4, granted("lapse", "gone", 50*time.Millisecond, 1))
	if res, err := share("lapse", "next", ttl, 1); err != nil || res.Acquired {
		t.Fatalf("permit beside a live one of limit 1 = %+v, %v; want refused", res, err)
	}
	time.Sleep(80 * time.Millisecond)
	cost("permit after a lapsed one", 5, granted("lapse", "next", ttl, 1))
	var rows int
	if err := d.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM dlock_locks_shares WHERE `key` = ?", prefix+"lapse").Scan(&rows); err != nil || rows != 1 {
		t.Errorf("shared rows of the key = %d, %v; want 1 (the lapsed one deleted)", rows, err)
	}
	cost("release", 3, released("lapse", "next"))
}

// TestSharedPermitRace: 16 goroutines on drivers with their own pools
// (URL ones, and applications' handles at READ COMMITTED and with
// MariaDB's simultaneous assignment) take permits of limit 3 of one key
// for 3 s; some holders vanish and leave their permits to lapse. No more
// than 3 permits are ever held at once, neither by the holders' count nor
// by Holders, every grant has a fence of its own, and a mutex taken at the
// end gets a higher one.
func TestSharedPermitRace(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	u, err := driver.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	ds := openDrivers(t, ctx, u, 2)
	for _, params := range []map[string]string{
		{"tx_isolation": "'READ-COMMITTED'"},
		{"sql_mode": "'STRICT_TRANS_TABLES,SIMULTANEOUS_ASSIGNMENT'"},
	} {
		cfg := srv.Config()
		cfg.Params = params
		db, err := openDB(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		d, err := NewDriver(ctx, db, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}

	const (
		key     = "race-permits"
		limit   = 3
		workers = 16
		ttl     = 5 * time.Second
		lapse   = 40 * time.Millisecond // the lease of a holder that vanishes
	)
	var (
		live, grants, lapsed atomic.Int64
		mu                   sync.Mutex
		fences               = map[uint64]bool{}
		newest               uint64
		wg                   sync.WaitGroup
	)
	deadline := time.Now().Add(3 * time.Second)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := ds[i%len(ds)].(driver.SharedLocker)
			for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				tok := fmt.Sprintf("w%d-%d", i, n)
				vanish := n%10 == 9
				lease := ttl
				if vanish {
					lease = lapse
				}
				res, err := d.AcquireShared(ctx, driver.SharedRequest{Request: driver.Request{Key: key, Token: tok, TTL: lease}, Limit: limit})
				if err != nil {
					t.Errorf("AcquireShared: %v", err)
					return
				}
				if !res.Acquired {
					time.Sleep(time.Millisecond)
					continue
				}
				grants.Add(1)
				mu.Lock()
				if fences[res.Fence] {
					t.Errorf("fence %d granted twice", res.Fence)
				}
				fences[res.Fence] = true
				newest = max(newest, res.Fence)
				mu.Unlock()
				if vanish {
					lapsed.Add(1)
					continue
				}
				if n := live.Add(1); n > limit {
					t.Errorf("%d permits held at once, limit %d", n, limit)
				}
				time.Sleep(time.Millisecond)
				live.Add(-1)
				if err := d.Release(ctx, key, tok); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d := ds[0].(driver.SharedLocker)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			h, err := d.Holders(ctx, key)
			if err != nil {
				t.Errorf("Holders: %v", err)
				return
			}
			if len(h.Holders) > limit {
				t.Errorf("Holders reports %d grants, limit %d: %+v", len(h.Holders), limit, h.Holders)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	wg.Wait()
	if t.Failed() {
		logDeadlock(t, srv)
		return
	}
	t.Logf("%d permits granted, %d left to lapse", grants.Load(), lapsed.Load())
	if grants.Load() < 50 || lapsed.Load() == 0 {
		t.Fatalf("%d permits granted (%d left to lapse), want at least 50 and some lapsed", grants.Load(), lapsed.Load())
	}
	time.Sleep(2 * lapse)
	res, err := ds[1].Acquire(ctx, driver.Request{Key: key, Token: "mutex", TTL: ttl})
	if err != nil || !res.Acquired || res.Fence <= newest {
		t.Fatalf("mutex after the permits = %+v, %v; want granted with a fence above %d", res, err, newest)
	}
}

// logDeadlock logs InnoDB's report of the latest deadlock, if any.
func logDeadlock(t *testing.T, srv *testserver.MariaDB) {
	root, err := srv.RootDB()
	if err != nil {
		return
	}
	defer root.Close()
	var typ, name, status string
	if root.QueryRow("SHOW ENGINE INNODB STATUS").Scan(&typ, &name, &status) != nil {
		return
	}
	i, j := strings.Index(status, "LATEST DETECTED DEADLOCK"), strings.Index(status, "TRANSACTIONS\n")
	if i >= 0 && j > i {
		t.Log(status[i:j])
	}
}

// openDrivers opens n drivers of u, each with its own pool, closed when
// the test ends.
func openDrivers(t *testing.T, ctx context.Context, u *driver.URL, n int) []driver.Locker {
	t.Helper()
	var ds []driver.Locker
	for range n {
		d, err := OpenURL(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		ds = append(ds, d)
	}
	return ds
}
