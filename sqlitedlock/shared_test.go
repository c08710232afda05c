package sqlitedlock_test

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/sqllease/sqlleasetest"
	"github.com/dlock-go/dlock/sqlitedlock"
)

// TestUpgradeSkipCreate: a lock table made before shared leases, opened
// with create_table=false, is refused with an error naming the missing
// companion table (not ErrUnavailable); once the documented DDL made it,
// Open works, and the old table's locks are untouched.
func TestUpgradeSkipCreate(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", sqlitedlock.DSN(path, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE "old_locks" (
	key        TEXT    NOT NULL COLLATE BINARY PRIMARY KEY,
	token      TEXT    NOT NULL DEFAULT '',
	fence      INTEGER NOT NULL DEFAULT 0,
	expires_at INTEGER NOT NULL DEFAULT 0,
	metadata   TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO "old_locks" VALUES ('kept', 'tok', 7, 0, '')`); err != nil {
		t.Fatal(err)
	}
	raw := "sqlite://" + path + "?table=old_locks&create_table=false"
	_, err = dlock.Open(ctx, raw)
	if err == nil || errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), `"old_locks_shares"`) {
		t.Fatalf("Open without the companion table = %v, want an error naming \"old_locks_shares\", not ErrUnavailable", err)
	}
	// The DDL of the package docs (docs/sqlite.md).
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS "old_locks_shares" (
	key         TEXT    NOT NULL COLLATE BINARY,
	writer      INTEGER NOT NULL DEFAULT 0,
	token       TEXT    NOT NULL,
	fence       INTEGER NOT NULL DEFAULT 0,
	expires_at  INTEGER NOT NULL DEFAULT 0,
	metadata    TEXT    NOT NULL DEFAULT '',
	share_limit INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (key, writer, token)
) WITHOUT ROWID`); err != nil {
		t.Fatal(err)
	}
	c, err := dlock.Open(ctx, raw)
	if err != nil {
		t.Fatalf("Open after the upgrade: %v", err)
	}
	defer c.Close()
	p, err := c.Semaphore("kept", 2).TryAcquire(ctx)
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

// TestSharedHandoff: shared waits of clients of this process on one file
// are woken by releases (sqlleasetest.RunSharedHandoff).
func TestSharedHandoff(t *testing.T) {
	ctx := testCtx(t)
	raw := "sqlite://" + filepath.Join(t.TempDir(), "handoff.db")
	var clients []*dlock.Client
	for range 3 {
		c, err := dlock.Open(ctx, raw)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	sqlleasetest.RunSharedHandoff(t, ctx, clients, "handoff/")
}
