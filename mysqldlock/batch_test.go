package mysqldlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// base returns the *myDriver under the tests' wrappers.
func base(d driver.Locker) *myDriver {
	switch v := d.(type) {
	case *myDriver:
		return v
	case closeAlso:
		return v.myDriver
	}
	panic(fmt.Sprintf("unexpected driver %T", d))
}

// batchHarness makes drivers with make and counts the statements
// RefreshBatch sends.
type batchHarness struct {
	make func(ctx context.Context) (driver.Locker, error)
}

func (h batchHarness) MakeDriver(ctx context.Context) (driver.Locker, error) { return h.make(ctx) }
func (h batchHarness) Close()                                                {}
func (h batchHarness) RoundTrips(d driver.Locker) int64                      { return base(d).batchStatements.Load() }
func (h batchHarness) MaxBatchRoundTrips(n int) int64 {
	return int64((n + batchRows - 1) / batchRows) // a mixed batch adds a SELECT per statement
}
func (h batchHarness) BatchLimit() int  { return batchRows }
func (h batchHarness) LongestTTL() bool { return true }

func TestBatchRefresher(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	t.Run("url", func(t *testing.T) {
		drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
			return batchHarness{(&harness{srv: srv}).MakeDriver}, nil
		})
	})
	// The application's own handle, with the settings that change how
	// statements are sent and what they report.
	sessions := []struct {
		name string
		edit func(*mysql.Config)
	}{
		{"defaults (server-side prepare)", func(*mysql.Config) {}},
		{"client found rows", func(c *mysql.Config) { c.ClientFoundRows = true }},
		{"ansi, no backslash escapes", func(c *mysql.Config) {
			c.InterpolateParams = true
			c.Params = map[string]string{"sql_mode": "'ANSI,NO_BACKSLASH_ESCAPES'"}
		}},
	}
	for _, s := range sessions {
		t.Run(s.name, func(t *testing.T) {
			drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return batchHarness{func(ctx context.Context) (driver.Locker, error) {
					cfg := srv.Config()
					s.edit(cfg)
					db, err := openDB(cfg)
					if err != nil {
						return nil, err
					}
					d, err := NewDriver(ctx, db, Config{})
					if err != nil {
						db.Close()
						return nil, err
					}
					return closeAlso{d.(*myDriver), db.Close}, nil
				}}, nil
			})
		})
	}
}

// TestRefreshBatchUnreachable: a server that stops answering fails every
// request of the batch with the statement's error, by the deadline.
func TestRefreshBatchUnreachable(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	proxy := testserver.StartProxy(t, srv.Addr())
	u := strings.Replace(srv.URL(), srv.Addr(), proxy.Addr(), 1)
	pu, err := driver.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	d, err := openURL(ctx, pu)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	key := "batch-unreachable"
	if res, err := d.Acquire(ctx, driver.Request{Key: key, Token: "t", TTL: time.Minute}); err != nil || !res.Acquired {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	proxy.Blackhole(true)
	defer proxy.Blackhole(false)
	bctx, bcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer bcancel()
	errs := d.(driver.BatchRefresher).RefreshBatch(bctx, []driver.RefreshRequest{
		{Key: key, Token: "t", TTL: time.Minute}, {Key: key + "-other", Token: "t", TTL: time.Minute},
	})
	for i, err := range errs {
		if err == nil || errors.Is(err, driver.ErrNotHeld) || err != errs[0] {
			t.Errorf("result %d = %v, want the statement's error for every request", i, err)
		}
	}
	if !errors.Is(errs[0], context.DeadlineExceeded) {
		t.Errorf("error = %v, want it to wrap context.DeadlineExceeded", errs[0])
	}
}
