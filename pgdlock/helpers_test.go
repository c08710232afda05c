package pgdlock

import (
	"context"
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/dlock-go/dlock"
)

// openClient opens a Client on url, closed when t ends.
func openClient(t *testing.T, ctx context.Context, url string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	c, err := dlock.Open(ctx, url, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// openDB opens a database/sql handle over pgx's stdlib driver.
func openDB(url string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	return stdlib.OpenDB(*cfg), nil
}
