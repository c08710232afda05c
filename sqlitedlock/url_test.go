package sqlitedlock_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/sqlitedlock"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestURLForms opens each accepted URL form and checks which file it made.
func TestURLForms(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	abs := filepath.Join(dir, "abs", "locks.db")
	tests := []struct {
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
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			ctx := testCtx(t)
			c, err := dlock.Open(ctx, tc.url)
			if err != nil {
				t.Fatalf("Open(%q): %v", tc.url, err)
			}
			defer c.Close()
			l, err := c.TryLock(ctx, "k")
			if err != nil {
				t.Fatalf("TryLock: %v", err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, tc.file)); err != nil {
				t.Fatalf("database file: %v, want %s to exist", err, tc.file)
			}
		})
	}
	st, err := os.Stat(filepath.Join(dir, "data", "sub"))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o700 {
		t.Errorf("created directory mode = %v, want 0700", got)
	}
}

func TestBadURLs(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		url  string
		want string // in the error
	}{
		{"sqlite://" + dir + "/a.db?bogus=1", "bogus"},
		{"sqlite://" + dir + "/a.db?table=1abc", "table name"},
		{"sqlite://" + dir + "/a.db?table=a-b", "table name"},
		{"sqlite://" + dir + "/a.db?table=sqlite_master", "table name"},
		{"sqlite://" + dir + "/a.db?table=" + strings.Repeat("t", 64), "table name"},
		{"sqlite://" + dir + "/a.db?table=a&table=b", "given 2 times"},
		{"sqlite://" + dir + "/a.db?busy_timeout=-1s", "negative"},
		{"sqlite://" + dir + "/a.db?busy_timeout=soon", "not a duration"},
		{"sqlite://" + dir + "/a.db?create_table=maybe", "not a boolean"},
		{"sqlite://" + dir + "/a.db?synchronous=extra", "normal or full"},
		{"sqlite://user:secret@" + dir + "/a.db", "user or password"},
		{"sqlite://" + dir + "/a#b.db", "%23"},
		{"sqlite://", "no database file path"},
		{"sqlite:", "no database file path"},
		{"sqlite://?table=x", "no database file path"},
		{"sqlite::memory:", "bare :memory:"},
		{"sqlite://:memory:", "bare :memory:"},
		{"sqlite::memory:a/b", "bare :memory:"},
		{"sqlite://localhost/x.db", "ambiguous"},
		{"sqlite:bad%zz.db", "percent-encoding"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			c, err := dlock.Open(testCtx(t), tc.url)
			if err == nil {
				c.Close()
				t.Fatalf("Open(%q) succeeded, want an error", tc.url)
			}
			if !errors.Is(err, dlock.ErrInvalidOption) {
				t.Errorf("Open(%q) = %v, want ErrInvalidOption", tc.url, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open(%q) = %q, want it to mention %q", tc.url, err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
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
			d, err := sqlitedlock.OpenDriver(testCtx(t), tc.path, sqlitedlock.Config{})
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
