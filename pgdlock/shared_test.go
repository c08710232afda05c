package pgdlock

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease/sqlleasetest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestShared: RefreshBatch, List and ForceRelease with shared grants, with
// notifications on and off; a lock table made before shared leases,
// opened with create_table=false, is refused with an error naming the
// missing companion table, and works once the documented DDL made it.
func TestShared(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, q := range []string{"", "&notify=false"} {
		u, err := driver.ParseURL(pg.URL() + q)
		if err != nil {
			t.Fatal(err)
		}
		d, err := OpenURL(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		sqlleasetest.RunSharedAdminTest(t, ctx, d, "adm"+q+"/")
		_ = d.Close()
	}

	db, err := openDB(pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE old_locks (
	"key"      bytea       NOT NULL PRIMARY KEY,
	token      bytea       NOT NULL DEFAULT ''::bytea,
	fence      bigint      NOT NULL DEFAULT 0,
	expires_at timestamptz NOT NULL DEFAULT '-infinity',
	metadata   text        NOT NULL DEFAULT ''
);
INSERT INTO old_locks ("key", fence) VALUES ('kept'::bytea, 7)`); err != nil {
		t.Fatal(err)
	}
	raw := pg.URL() + "&table=old_locks&create_table=false"
	_, err = dlock.Open(ctx, raw)
	if err == nil || errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "old_locks_shares") {
		t.Fatalf("Open without the companion table = %v, want an error naming old_locks_shares, not ErrUnavailable", err)
	}
	// The DDL of docs/sql.md.
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS old_locks_shares (
	"key"       bytea       NOT NULL,
	writer      boolean     NOT NULL DEFAULT false,
	token       bytea       NOT NULL,
	fence       bigint      NOT NULL DEFAULT 0,
	expires_at  timestamptz NOT NULL,
	metadata    text        NOT NULL DEFAULT '',
	share_limit integer     NOT NULL DEFAULT 0,
	PRIMARY KEY ("key", writer, token)
)`); err != nil {
		t.Fatal(err)
	}
	old := openClient(t, ctx, raw)
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

// TestSharedRace: drivers with their own pools, over pgxpool and
// database/sql, never grant beside what they exclude.
func TestSharedRace(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var ds []driver.Locker
	for _, viaDB := range []bool{false, true, false} {
		d, err := (&harness{url: pg.URL(), viaDB: viaDB}).MakeDriver(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ds = append(ds, d)
	}
	sqlleasetest.RunSharedRace(t, ctx, ds, "race")
}

// TestSharedHandoff: shared waits of clients with their own pools are
// woken by LISTEN/NOTIFY (sqlleasetest.RunSharedHandoff).
func TestSharedHandoff(t *testing.T) {
	pg := testserver.StartPostgres(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var clients []*dlock.Client
	for range 3 {
		clients = append(clients, openClient(t, ctx, pg.URL()))
	}
	sqlleasetest.RunSharedHandoff(t, ctx, clients, "handoff/")
}
