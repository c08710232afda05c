package mysqldlock

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// killUser KILLs every connection of user, as an operator or a proxy
// failover would, and returns how many.
func killUser(t testing.TB, ctx context.Context, root *sql.DB, user string) int {
	t.Helper()
	rows, err := root.QueryContext(ctx, "SELECT id FROM information_schema.processlist WHERE user = ?", user)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if _, err := root.ExecContext(ctx, "KILL ?", id); err != nil && !strings.Contains(err.Error(), "Unknown thread") {
			t.Fatalf("KILL %d: %v", id, err)
		}
	}
	return len(ids)
}

// faultHarness is a harness over a server of its own that the fault
// scenarios may kill, restart, pause and cut off behind a proxy.
type faultHarness struct {
	harness
	testserver.ProxyFaults
}

func (h *faultHarness) Addr() string       { return h.srv.Addr() }
func (h *faultHarness) Kill(testing.TB)    { h.srv.Kill() }
func (h *faultHarness) Restart(testing.TB) { h.srv.Restart() }

func (h *faultHarness) KillConnections(t testing.TB) int {
	root, err := h.srv.RootDB()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	return killUser(t, t.Context(), root, h.srv.User)
}

func (h *faultHarness) MakeProxiedDriver(ctx context.Context) (driver.Locker, error) {
	proxied := harness{srv: h.srv, url: strings.Replace(h.srv.URL(), h.srv.Addr(), h.Proxies[0].Addr(), 1)}
	return proxied.MakeDriver(ctx)
}

func (h *faultHarness) URL() string { return h.srv.URL() }

func (h *faultHarness) Pause(t testing.TB) func() {
	return drivertest.Break(t, h.srv.Pause, h.srv.Resume)
}

func TestFaults(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	proxy := testserver.StartProxy(t, srv.Addr())
	drivertest.RunFaultTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
		return &faultHarness{harness: harness{srv: srv}, ProxyFaults: testserver.ProxyFaultsOf(proxy)}, nil
	})
}
