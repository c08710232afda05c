package pgdlock

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// base returns the *pgDriver under the wrappers the package and its tests
// put around it.
func base(d driver.Locker) *pgDriver {
	for {
		switch v := d.(type) {
		case *pgDriver:
			return v
		case pollOnly:
			d = v.Locker
		case closeAlso:
			d = v.Locker
		default:
			panic(fmt.Sprintf("unexpected driver %T", d))
		}
	}
}

// batchModes are the ways an application hands the driver its connections.
var batchModes = []struct {
	name string
	h    func(url string) *harness
}{
	{"pgxpool", func(u string) *harness { return &harness{url: u} }},
	{"database_sql", func(u string) *harness { return &harness{url: u, viaDB: true} }},
	{"simple_protocol", func(u string) *harness {
		return &harness{url: u + "&default_query_exec_mode=simple_protocol&notify=false"}
	}},
}

// batchHarness counts the statements RefreshBatch sends.
type batchHarness struct{ *harness }

func (h batchHarness) RoundTrips(d driver.Locker) int64 { return base(d).batchStatements.Load() }
func (h batchHarness) MaxBatchRoundTrips(n int) int64 {
	return int64((n + batchRows - 1) / batchRows)
}
func (h batchHarness) BatchLimit() int  { return batchRows }
func (h batchHarness) LongestTTL() bool { return true }

func TestBatchRefresher(t *testing.T) {
	pg := testserver.StartPostgres(t)
	for _, m := range batchModes {
		t.Run(m.name, func(t *testing.T) {
			drivertest.RunBatchRefresherTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return batchHarness{m.h(pg.URL())}, nil
			})
		})
	}
}

// TestRefreshBatchPlan checks that the planner looks up a batch's keys in
// the primary key index instead of scanning the table: the table has one
// row per key ever locked, so a scan would make every refresh cost as much
// as the whole history.
func TestRefreshBatchPlan(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	d, err := NewDriver(ctx, pool, Options{Table: "plan_locks"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pd := base(d)
	for _, q := range []string{
		`INSERT INTO plan_locks ("key", token, fence, expires_at)
		SELECT convert_to('k' || i, 'UTF8'), 'tok', 1, now() + interval '1 hour' FROM generate_series(1, 50000) i`,
		`ANALYZE plan_locks`,
	} {
		if _, err := pd.q.exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{1, 500, batchRows} {
		items := make([]driver.RefreshRequest, n)
		for i := range items {
			items[i] = driver.RefreshRequest{Key: fmt.Sprint("k", i*7+1), Token: "tok", TTL: time.Minute}
		}
		keys, tokens, ttls := batchLists(items)
		var plan []string
		err := pd.q.query(ctx, "EXPLAIN "+pd.st.refreshBatch, []any{keys, tokens, ttls}, func(scan func(...any) error) error {
			var line string
			err := scan(&line)
			plan = append(plan, line)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if p := strings.Join(plan, "\n"); strings.Contains(p, "Seq Scan") || !strings.Contains(p, "plan_locks_pkey") {
			t.Errorf("plan for %d locks reads the whole table:\n%s", n, p)
		}
	}
}
