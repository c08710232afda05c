package sqlitedlock

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/dlock-go/dlock/driver"
)

const memoryPrefix = ":memory:"

var memoryNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// OpenURL opens a driver for a sqlite URL (see the package documentation)
// with the default settings: (&URLOpener{}).OpenLockerURL(ctx, u).
func OpenURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	return (&URLOpener{}).OpenLockerURL(ctx, u)
}

// URLOpener opens sqlite URLs (see the package documentation for their
// forms and parameters) with settings given in code. The zero value uses the
// defaults; init registers one for the sqlite scheme with dlock.Register.
type URLOpener struct {
	// Options are the driver's settings where the URL does not give them:
	// a query parameter, when present, wins over the field it names (table
	// over Table, busy_timeout over BusyTimeout, create_table over
	// SkipCreateTable, synchronous over FullSync); a field no parameter
	// names applies as it is.
	Options Options
}

var _ driver.URLOpener = (*URLOpener)(nil)

// OpenLockerURL implements driver.URLOpener: it opens (creating when
// missing) the database file, or the named in-memory database, that u
// names, as OpenDriver does. An invalid URL or setting gives an error
// matching dlock.ErrInvalidOption; a file that cannot be opened one matching
// dlock.ErrUnavailable.
func (o *URLOpener) OpenLockerURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	path, err := urlPath(u)
	if err != nil {
		return nil, err
	}
	cfg := o.Options
	cfg.Table = u.String("table", cfg.Table)
	cfg.SkipCreateTable = !u.Bool("create_table", !cfg.SkipCreateTable)
	if u.Has("busy_timeout") {
		cfg.BusyTimeout = u.Duration("busy_timeout", 0)
		switch {
		case cfg.BusyTimeout < 0:
			u.Fail(fmt.Errorf("%w: parameter \"busy_timeout\": %v is negative", driver.ErrInvalidOption, cfg.BusyTimeout))
		case cfg.BusyTimeout == 0:
			cfg.BusyTimeout = -1 // in the URL, 0 turns SQLite's wait off; in Options, zero is the default
		}
	}
	if u.Has("synchronous") {
		switch sync := strings.ToLower(u.String("synchronous", "")); sync {
		case "normal":
			cfg.FullSync = false
		case "full":
			cfg.FullSync = true
		default:
			u.Fail(fmt.Errorf("%w: parameter \"synchronous\": %q is not normal or full", driver.ErrInvalidOption, sync))
		}
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	if name, ok := strings.CutPrefix(path, memoryPrefix); ok {
		if !memoryNameRE.MatchString(name) {
			return nil, fmt.Errorf("%w: sqlite URL %q: a bare :memory: database is private to one connection and would not exclude anyone; use sqlite::memory:NAME (letters, digits, '_', '.', '-') to share one in-memory database among the clients of this process", driver.ErrInvalidOption, u.Redacted())
		}
		return openMemory(ctx, name, cfg)
	}
	return OpenDriver(ctx, path, cfg)
}

// urlPath extracts the file path: everything between "sqlite:" or
// "sqlite://" and the query, percent-decoded.
func urlPath(u *driver.URL) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: sqlite URL %q: %s", driver.ErrInvalidOption, u.Redacted(), why)
	}
	if u.User != nil {
		return "", bad("a user or password has no meaning for an SQLite file")
	}
	if u.Fragment != "" {
		return "", bad("a '#' in the path must be written %23")
	}
	var path string
	if u.Opaque != "" {
		p, err := url.PathUnescape(u.Opaque)
		if err != nil {
			return "", bad("bad percent-encoding in the path")
		}
		path = p
	} else {
		if strings.EqualFold(u.Host, "localhost") {
			return "", bad("ambiguous host \"localhost\": write sqlite:///abs/path.db for an absolute path or sqlite:localhost/rel.db for a relative one")
		}
		path = u.Host + u.Path
	}
	if path == "" {
		return "", bad("no database file path; want e.g. sqlite:///var/lib/app/locks.db")
	}
	if strings.ContainsRune(path, 0) {
		return "", bad("the path contains a NUL byte")
	}
	return path, nil
}
