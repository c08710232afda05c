package pgdlock

import (
	"context"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// harness makes drivers over one server, each with its own pool, as
// separate processes would have.
type harness struct {
	url   string
	viaDB bool
}

func (h *harness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	if !h.viaDB {
		u, err := driver.ParseURL(h.url)
		if err != nil {
			return nil, err
		}
		return OpenURL(ctx, u)
	}
	db, err := openDB(h.url)
	if err != nil {
		return nil, err
	}
	// database/sql keeps only 2 idle connections by default; a busy client
	// would reconnect (and re-authenticate) for most statements.
	db.SetMaxIdleConns(8)
	d, err := NewDriverDB(ctx, db, Options{})
	if err != nil {
		db.Close()
		return nil, err
	}
	return closeAlso{d, db.Close}, nil
}

func (h *harness) Close() {}

// closeAlso closes an extra resource after the driver. It keeps the
// driver's Notifier, BatchRefresher, Lister and ForceReleaser.
type closeAlso struct {
	driver.Locker
	also func() error
}

func (c closeAlso) Close() error {
	err := c.Locker.Close()
	_ = c.also()
	return err
}

func (c closeAlso) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	return c.Locker.(driver.Notifier).WatchReleases(ctx, key)
}

func (c closeAlso) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	return c.Locker.(driver.BatchRefresher).RefreshBatch(ctx, reqs)
}

func (c closeAlso) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	return c.Locker.(driver.Lister).List(ctx, prefix)
}

func (c closeAlso) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	return c.Locker.(driver.ForceReleaser).ForceRelease(ctx, key)
}

func TestConformance(t *testing.T) {
	pg := testserver.StartPostgres(t)
	for _, viaDB := range []bool{false, true} {
		name := "pgxpool"
		if viaDB {
			name = "database_sql"
		}
		t.Run(name, func(t *testing.T) {
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return &harness{url: pg.URL(), viaDB: viaDB}, nil
			})
		})
	}
}

func (c closeAlso) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	return c.Locker.(driver.SharedLocker).AcquireShared(ctx, req)
}

func (c closeAlso) Holders(ctx context.Context, key string) (driver.Holders, error) {
	return c.Locker.(driver.SharedLocker).Holders(ctx, key)
}

func (c closeAlso) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	return c.Locker.(driver.MultiLocker).AcquireMany(ctx, reqs)
}

func (c closeAlso) RefreshShared(ctx context.Context, key, token string, ttl time.Duration) error {
	return c.Locker.(driver.ShareKeeper).RefreshShared(ctx, key, token, ttl)
}

func (c closeAlso) ReleaseShared(ctx context.Context, key, token string) error {
	return c.Locker.(driver.ShareKeeper).ReleaseShared(ctx, key, token)
}
