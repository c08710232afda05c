package mysqldlock

import (
	"context"
	"fmt"
	"testing"

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
					d, err := NewDriver(ctx, db, Options{})
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
