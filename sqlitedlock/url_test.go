package sqlitedlock_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/sqlitedlock"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestURLs opens each accepted URL form, checks which file it made, and
// the forms and parameters refused.
func TestURLs(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	abs := filepath.Join(dir, "abs", "locks.db")
	valid := []struct {
		url  string
		file string // relative to dir
	}{
		{"sqlite://" + abs, "abs/locks.db"},
		{"sqlite:" + filepath.Join(dir, "abs2.db"), "abs2.db"},
		{"sqlite://rel.db", "rel.db"},
		{"sqlite:rel2.db", "rel2.db"},
		{"sqlite://data/sub/x.db?table=my_locks", "data/sub/x.db"},
		{"sqlite:data2/x.db?busy_timeout=250ms&create_table=true&synchronous=full", "data2/x.db"},
		{"sqlite:sp%20ace%3F%23.db?busy_timeout=0", "sp ace?#.db"},
		{"sqlite://" + dir + "/sp%20ace%3F.db", "sp ace?.db"},
		{"sqlite:p%25ct.db?busy_timeout=2", "p%ct.db"},
	}
	cases := drivertest.URLCases{
		Secret:           "secret",
		ConcurrentCreate: "sqlite://" + dir + "/racing.db?table=racing",
	}
	for _, v := range valid {
		cases.Valid = append(cases.Valid, v.url)
	}
	for _, bad := range [][2]string{
		{"/a.db?bogus=1", "bogus"},
		{"/a.db?table=1abc", "table name"},
		{"/a.db?table=a-b", "table name"},
		{"/a.db?table=sqlite_master", "table name"},
		{"/a.db?table=" + strings.Repeat("t", 64), "table name"},
		{"/a.db?table=a&table=b", "given 2 times"},
		{"/a.db?busy_timeout=-1s", "negative"},
		{"/a.db?busy_timeout=soon", "not a duration"},
		{"/a.db?create_table=maybe", "not a boolean"},
		{"/a.db?synchronous=extra", "normal or full"},
		{"/a#b.db", "%23"},
	} {
		cases.Invalid = append(cases.Invalid, drivertest.InvalidURL{URL: "sqlite://" + dir + bad[0], Want: bad[1]})
	}
	for _, bad := range [][2]string{
		{"sqlite://user:secret@" + dir + "/a.db", "user or password"},
		{"sqlite://", "no database file path"},
		{"sqlite:", "no database file path"},
		{"sqlite://?table=x", "no database file path"},
		{"sqlite::memory:", "bare :memory:"},
		{"sqlite://:memory:", "bare :memory:"},
		{"sqlite::memory:a/b", "bare :memory:"},
		{"sqlite://localhost/x.db", "ambiguous"},
		{"sqlite:bad%zz.db", "percent-encoding"},
	} {
		cases.Invalid = append(cases.Invalid, drivertest.InvalidURL{URL: bad[0], Want: bad[1]})
	}
	drivertest.RunURLTests(t, cases)
	for _, v := range valid {
		if _, err := os.Stat(filepath.Join(dir, v.file)); err != nil {
			t.Errorf("database file of %s: %v, want %s to exist", v.url, err, v.file)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "data", "sub"))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("created directory mode = %v, want 0700", got)
	}
}

// TestURLOpener: a URLOpener's Options reach the driver, and a URL
// parameter wins over the field it names.
func TestURLOpener(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "locks.db")
	o := &sqlitedlock.URLOpener{Options: sqlitedlock.Options{Table: "coded_locks", SkipCreateTable: true}}
	for _, tc := range []struct{ query, table string }{
		{"?create_table=true", "coded_locks"},
		{"?table=url_locks&create_table=true", "url_locks"},
		{"", "coded_locks"}, // exists now, and SkipCreateTable applies
	} {
		c := dlock.NewClient(drivertest.OpenURL(ctx, t, o, "sqlite://"+path+tc.query))
		l, err := c.TryLock(ctx, "opener"+tc.query)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.List(ctx, "opener"+tc.query)
		_ = l.Unlock(ctx)
		_ = c.Close()
		if err != nil || len(info) != 1 {
			t.Fatalf("List = %v, %v; want the lock", info, err)
		}
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = db.QueryRowContext(ctx, "SELECT count(*) FROM "+tc.table+" WHERE key = ?", "opener"+tc.query).Scan(&n)
		db.Close()
		if err != nil || n != 1 {
			t.Errorf("%q: rows of the lock in %s = %d, %v; want 1", tc.query, tc.table, n, err)
		}
	}
	u, _ := driver.ParseURL("sqlite://" + filepath.Join(t.TempDir(), "none.db"))
	if _, err := o.OpenLockerURL(ctx, u); err == nil || !strings.Contains(err.Error(), "coded_locks") {
		t.Errorf("OpenLockerURL with SkipCreateTable and no table = %v, want an error naming coded_locks", err)
	}
}

// TestUnusablePath checks that a path that cannot hold a database gives a
// clear error naming it, matching ErrUnavailable.
func TestUnusablePath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plainfile")
	if err := os.WriteFile(file, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	notDB := filepath.Join(dir, "notdb.db")
	if err := os.WriteFile(notDB, []byte(strings.Repeat("this is not an SQLite database\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"parent is a file", filepath.Join(file, "sub", "locks.db"), "cannot create the database directory"},
		{"path is a directory", dir, "is a directory"},
		{"not a database", notDB, "not a database"},
		{"file cannot be created", "/proc/dlock-test-locks.db", "cannot open or create"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := sqlitedlock.OpenDriver(testCtx(t), tc.path, sqlitedlock.Options{})
			if err == nil {
				d.Close()
				t.Fatalf("OpenDriver(%q) succeeded, want an error", tc.path)
			}
			if !errors.Is(err, dlock.ErrUnavailable) {
				t.Errorf("error = %v, want ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to name %s and say %q", err, tc.path, tc.want)
			}
		})
	}
}

// TestCreateTableFalse checks that create_table=false needs the table and
// uses it once it exists.
func TestCreateTableFalse(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "locks.db")
	_, err := dlock.Open(ctx, "sqlite://"+path+"?create_table=false&table=pre_made")
	if err == nil || !strings.Contains(err.Error(), `"pre_made"`) {
		t.Fatalf("Open without the table = %v, want an error naming table \"pre_made\"", err)
	}
	c, err := dlock.Open(ctx, "sqlite://"+path+"?table=pre_made")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = dlock.Open(ctx, "sqlite://"+path+"?create_table=false&table=pre_made")
	if err != nil {
		t.Fatalf("Open with the table present: %v", err)
	}
	defer c.Close()
	if _, err := c.TryLock(ctx, "k"); err != nil {
		t.Fatal(err)
	}
}
