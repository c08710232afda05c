package sqlitedlock

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Scheme is the URL scheme this package registers.
const Scheme = "sqlite"

// DefaultTable is the table that holds the locks unless Options.Table says
// otherwise.
const DefaultTable = "dlock_locks"

// DefaultBusyTimeout is how long SQLite waits for another writer of the file
// unless Options.BusyTimeout says otherwise.
const DefaultBusyTimeout = 5 * time.Second

func init() {
	dlock.Register(Scheme, &URLOpener{})
}

// Options configure a driver. The zero value uses the defaults.
type Options struct {
	// Table is the table holding the locks; default (empty) DefaultTable.
	// It must be letters, digits and '_', not start with a digit or
	// "sqlite_", and be at most 63 bytes.
	Table string
	// BusyTimeout is how long SQLite waits for another writer of the file
	// before the driver's own retry takes over. Zero means
	// DefaultBusyTimeout; a negative value disables SQLite's wait. It
	// applies to connections the driver opens (OpenDriver, Open); for a
	// *sql.DB passed to NewDriver, set it in your DSN (see DSN).
	BusyTimeout time.Duration
	// SkipCreateTable leaves the table alone: it must already exist.
	// Default false: the driver creates it when missing.
	SkipCreateTable bool
	// FullSync sets PRAGMA synchronous=FULL, so that grants survive a power
	// loss, not only a process crash. Default false: synchronous=NORMAL. It
	// applies to connections the driver opens.
	FullSync bool
}

func (c Options) withDefaults() (Options, error) {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if err := validateTable(c.Table); err != nil {
		return c, err
	}
	if c.BusyTimeout == 0 {
		c.BusyTimeout = DefaultBusyTimeout
	}
	if c.BusyTimeout < 0 {
		c.BusyTimeout = 0
	}
	return c, nil
}

var tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

func validateTable(name string) error {
	if !tableRE.MatchString(name) || strings.HasPrefix(strings.ToLower(name), "sqlite_") {
		return fmt.Errorf("%w: sqlite table name %q: want letters, digits and '_', not starting with a digit or \"sqlite_\", at most 63 bytes", driver.ErrInvalidOption, name)
	}
	return nil
}

// Open opens (creating when missing) the lock database at path with opts
// (the zero Options for the defaults) and returns a Client over it, made
// with clientOpts. A relative path is resolved against the working
// directory; a missing parent directory is created with mode 0700. Every
// process that opens the same file shares its locks. Errors are those of
// OpenDriver.
func Open(ctx context.Context, path string, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := OpenDriver(ctx, path, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// OpenDriver opens (creating when missing) the lock database at path and
// returns the driver, for dlock.NewClient, tests and advanced use. The
// driver owns its connection and closes it on Close.
//
// Connections are opened with the DSN that DSN returns: WAL mode, the busy
// timeout, synchronous=NORMAL (FULL with opts.FullSync) and immediate
// transactions. The error for a file that cannot be created or opened
// matches dlock.ErrUnavailable and names the path.
func OpenDriver(ctx context.Context, path string, opts Options) (driver.Locker, error) {
	cfg, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if path == "" {
		return nil, fmt.Errorf("%w: sqlite: empty database path", driver.ErrInvalidOption)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%w: sqlite %s: %v", driver.ErrUnavailable, path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("%w: sqlite %s: cannot create the database directory: %v", driver.ErrUnavailable, abs, unwrapPathError(err))
	}
	if st, err := os.Stat(abs); err == nil && st.IsDir() {
		return nil, fmt.Errorf("%w: sqlite %s: is a directory, not a database file", driver.ErrUnavailable, abs)
	}
	return openDSN(ctx, dsn(fileURI(abs), cfg), abs, "", cfg)
}

// openMemory opens the named in-memory database of this process.
func openMemory(ctx context.Context, name string, cfg Options) (driver.Locker, error) {
	uri := "file:/" + url.PathEscape(name) + "?vfs=memdb"
	return openDSN(ctx, dsn(uri, cfg), ":memory:"+name, "memdb:"+name, cfg)
}

func openDSN(ctx context.Context, dsnStr, display, hubID string, cfg Options) (driver.Locker, error) {
	db, err := sql.Open("sqlite", dsnStr)
	if err != nil {
		return nil, fmt.Errorf("%w: sqlite %s: %v", driver.ErrUnavailable, display, err)
	}
	// One connection per driver: goroutines of one client queue in the
	// pool, with a prompt hand-off, instead of in SQLite's busy handler,
	// whose sleeps grow to 100 ms. Other processes still meet in the busy
	// handler.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	d, err := newDriver(ctx, db, cfg, display, hubID, true)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return d, nil
}

// NewClient returns a Client, made with clientOpts, over a *sql.DB the
// application already has open on an SQLite database, with opts (the zero
// Options for the defaults). See NewDriver for what the DB needs.
func NewClient(ctx context.Context, db *sql.DB, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(ctx, db, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// NewDriver returns a driver over a *sql.DB the application already has
// open on an SQLite database (SQLite 3.35 or newer). The driver does not
// close db. It changes no connection settings: open db with the DSN that
// DSN returns, or set the same PRAGMAs yourself on every connection —
// journal_mode=WAL (a property of the file, set once) and busy_timeout (per
// connection) — so that processes contend without errors. Without them the
// locks are still correct, but a busy file makes the driver retry more.
// opts.BusyTimeout and opts.FullSync do not apply here.
func NewDriver(ctx context.Context, db *sql.DB, opts Options) (driver.Locker, error) {
	cfg, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if db == nil {
		return nil, fmt.Errorf("%w: sqlite: nil *sql.DB", driver.ErrInvalidOption)
	}
	return newDriver(ctx, db, cfg, "database", "", false)
}

// DSN returns the modernc.org/sqlite data source name the driver uses for
// the database file at path: WAL mode, a busy timeout, synchronous=NORMAL
// and immediate transactions. Applications that open the lock database
// themselves can pass it to sql.Open("sqlite", ...) and then NewDriver. A
// busyTimeout of zero means DefaultBusyTimeout.
func DSN(path string, busyTimeout time.Duration) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	cfg, _ := Options{BusyTimeout: busyTimeout}.withDefaults()
	return dsn(fileURI(abs), cfg)
}

// fileURI makes an SQLite URI for an absolute path, escaping what SQLite's
// URI parser would otherwise read as syntax.
func fileURI(abs string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
}

func dsn(uri string, cfg Options) string {
	sync := "NORMAL"
	if cfg.FullSync {
		sync = "FULL"
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", cfg.BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+sync+")")
	q.Set("_txlock", "immediate")
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return uri + sep + q.Encode()
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s %s: %w", pe.Op, pe.Path, pe.Err)
	}
	return err
}
