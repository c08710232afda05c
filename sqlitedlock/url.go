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

// openURL opens a driver for a sqlite URL (see the package documentation).
func openURL(ctx context.Context, u *driver.URL) (driver.Locker, error) {
	path, err := urlPath(u)
	if err != nil {
		return nil, err
	}
	cfg := Config{
		Table:           u.String("table", DefaultTable),
		BusyTimeout:     u.Duration("busy_timeout", DefaultBusyTimeout),
		SkipCreateTable: !u.Bool("create_table", true),
	}
	switch sync := strings.ToLower(u.String("synchronous", "normal")); sync {
	case "normal":
	case "full":
		cfg.FullSync = true
	default:
		u.Fail(fmt.Errorf("%w: parameter \"synchronous\": %q is not normal or full", driver.ErrInvalidOption, sync))
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	switch {
	case cfg.BusyTimeout < 0:
		return nil, fmt.Errorf("%w: parameter \"busy_timeout\": %v is negative", driver.ErrInvalidOption, cfg.BusyTimeout)
	case cfg.BusyTimeout == 0:
		cfg.BusyTimeout = -1 // Config's zero means the default
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
