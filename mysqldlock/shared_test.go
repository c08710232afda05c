package mysqldlock

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
	var ds []driver.Locker
	for range 3 {
		d, err := OpenURL(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ds = append(ds, d)
	}
	sqlleasetest.RunSharedRace(t, ctx, ds, "race")
}
