package mysqldlock

import (
	"context"
	"database/sql"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// harness makes drivers over one server, each with its own connection
// pool, as separate processes would have.
type harness struct {
	srv   *testserver.MariaDB
	url   string // the URL to open instead of the server's own, if set
	viaDB bool
}

func (h *harness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	if !h.viaDB {
		raw := h.url
		if raw == "" {
			raw = h.srv.URL()
		}
		u, err := driver.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		return OpenURL(ctx, u)
	}
	// An application's own handle: default go-sql-driver settings, so
	// statements are prepared on the server.
	db, err := openDB(h.srv.Config())
	if err != nil {
		return nil, err
	}
	d, err := NewDriver(ctx, db, Options{})
	if err != nil {
		db.Close()
		return nil, err
	}
	return closeAlso{d.(*myDriver), db.Close}, nil
}

func (h *harness) Close() {}

// LocalNotifications implements drivertest.LocalNotifier: MySQL has no
// notifications between connections.
func (h *harness) LocalNotifications() bool { return true }

// closeAlso closes the application's handle after the driver.
type closeAlso struct {
	*myDriver
	also func() error
}

func (c closeAlso) Close() error {
	err := c.myDriver.Close()
	_ = c.also()
	return err
}

func openDB(cfg *mysql.Config) (*sql.DB, error) {
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxIdleConns(8)
	return db, nil
}

func TestConformance(t *testing.T) {
	srv := testserver.StartMariaDB(t)
	for _, viaDB := range []bool{false, true} {
		name := "url"
		if viaDB {
			name = "database_sql"
		}
		t.Run(name, func(t *testing.T) {
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return &harness{srv: srv, viaDB: viaDB}, nil
			})
		})
	}
}
