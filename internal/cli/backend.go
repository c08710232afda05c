package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// EnvBackend names the environment variable holding the default backend URL.
const EnvBackend = "DLOCK_BACKEND"

// defaultConnectTimeout bounds opening the backend, and each single request
// that is not a wait (status, --try, release).
const defaultConnectTimeout = 10 * time.Second

// EnvLockDir names the environment variable that overrides the directory
// of the default backend (normally /run/lock, else /var/lock), for
// packagers whose systems keep lock files elsewhere, and for tests.
const EnvLockDir = "DLOCK_LOCK_DIR"

// defaultLockDirs are where the default backend lives, first usable first.
var defaultLockDirs = []string{"/run/lock", "/var/lock"}

// backendFlags are the flags every command that talks to a backend shares.
type backendFlags struct {
	url     string
	given   bool // --backend was on the command line, perhaps empty
	timeout *time.Duration
	// shared refuses backends whose locks do not reach other processes
	// (mem://, a named in-memory SQLite database).
	shared bool
}

func addBackendFlags(fs *flag.FlagSet) *backendFlags {
	b := &backendFlags{}
	fs.Func("backend", "backend `URL`, e.g. redis://127.0.0.1:6379 (default $"+EnvBackend+", else the host-wide SQLite file /run/lock/dlock/dlock.db)", func(s string) error {
		b.url, b.given = s, true
		return nil
	})
	b.timeout = durationFlag(fs, "connect-timeout", defaultConnectTimeout, "give up connecting to the backend, or on a single request, after `D`")
	return b
}

// resolve picks the backend URL: --backend, else $DLOCK_BACKEND, else the
// host-wide SQLite file (see defaultBackend). An empty --backend or an
// empty $DLOCK_BACKEND that is set is an error, not the default.
func (b *backendFlags) resolve() (string, error) {
	var raw string
	switch env, set := os.LookupEnv(EnvBackend); {
	case b.given && b.url == "":
		return "", exitf(ExitUsage, "dlock: --backend is empty; give a backend URL, or leave the flag out for the default")
	case b.given:
		raw = b.url
	case set && env == "":
		return "", exitf(ExitUsage, "dlock: $%s is set but empty; give a backend URL, or unset it for the default", EnvBackend)
	case set:
		raw = env
	default:
		u, err := defaultBackend()
		if err != nil {
			return "", err
		}
		raw = u
	}
	if b.shared && inProcessOnly(raw) {
		return "", exitf(ExitUsage, "dlock: %s locks within one process only, so it would exclude nobody: use an SQLite file or a server", redact(raw))
	}
	return raw, nil
}

// defaultBackend returns the URL of the host-wide SQLite file, making the
// directory and the file when missing. Every user of the host must get the
// same file, able to take a lock but not to delete another user's files:
//
//   - the directory D is $DLOCK_LOCK_DIR/dlock, else /run/lock/dlock, else
//     /var/lock/dlock (under the first of those parents that exists);
//   - D must be a real directory (not a symbolic link), world-writable and
//     sticky (mode 1777), owned by root, by the user running dlock, or by
//     the owner of the database file in it; when missing, dlock makes it
//     with mode 1777;
//   - the file D/dlock.db must be a regular file writable by group and
//     others (SQLite gives its -wal and -shm files the file's mode); when
//     missing, dlock makes it with mode 0666, whatever the umask.
//
// Anything else is an error naming the path and what is wrong.
func defaultBackend() (string, error) {
	parent, err := lockParent()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(parent, "dlock")
	if err := sharedDir(dir); err != nil {
		return "", err
	}
	file := filepath.Join(dir, "dlock.db")
	if err := sharedFile(file); err != nil {
		return "", err
	}
	return (&url.URL{Scheme: "sqlite", Path: filepath.ToSlash(file)}).String(), nil
}

// lockParent returns $DLOCK_LOCK_DIR, or the first default lock directory
// that exists.
func lockParent() (string, error) {
	if d, ok := os.LookupEnv(EnvLockDir); ok {
		if !filepath.IsAbs(d) {
			return "", exitf(ExitUsage, "dlock: $%s must be an absolute path, got %q", EnvLockDir, d)
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			return "", exitf(ExitUnavailable, "dlock: default backend: $%s=%s is not a directory", EnvLockDir, d)
		}
		return d, nil
	}
	for _, d := range defaultLockDirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d, nil
		}
	}
	return "", exitf(ExitUnavailable, "dlock: default backend: none of %s exists; set --backend or $%s (or $%s)", strings.Join(defaultLockDirs, ", "), EnvBackend, EnvLockDir)
}

// sharedDir checks, or makes, the sticky world-writable directory dir.
func sharedDir(dir string) error {
	bad := func(format string, args ...any) error {
		return exitf(ExitUnavailable, "dlock: default backend: directory %s %s; set --backend or $%s, or have root run: install -d -m 1777 -o root %s", dir, fmt.Sprintf(format, args...), EnvBackend, dir)
	}
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// Made under a temporary name, its mode set (Mkdir's passes
		// through the umask), then renamed into place: no other dlock
		// ever sees it half made.
		tmp, merr := os.MkdirTemp(filepath.Dir(dir), ".dlock-")
		if merr != nil {
			return bad("cannot be made: %s", clean(merr))
		}
		if err := os.Chmod(tmp, 0o777|fs.ModeSticky); err != nil {
			os.Remove(tmp)
			return bad("cannot be made shared: %s", clean(err))
		}
		if err := os.Rename(tmp, dir); err != nil {
			os.Remove(tmp) // another dlock made it first
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return bad("cannot be used: %s", clean(err))
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return bad("is a symbolic link")
	case !fi.IsDir():
		return bad("is not a directory")
	case fi.Mode()&fs.ModeSticky == 0 || fi.Mode().Perm()&0o002 == 0:
		return bad("has mode %v, want 1777 (world-writable and sticky, so that no user can delete another's files)", fi.Mode())
	}
	if uid, ok := fileOwner(fi); ok && uid != 0 && uid != os.Geteuid() {
		// The owner of a sticky directory can delete any file in it; so
		// can the owner of the database file. Accept a directory owned
		// by another user only when that user also owns the file: then
		// nobody gains a power over the file that its owner lacks.
		fuid, ok := -1, false
		if ffi, err := os.Lstat(filepath.Join(dir, "dlock.db")); err == nil {
			fuid, ok = fileOwner(ffi)
		}
		if !ok || fuid != uid {
			return bad("is owned by uid %d, who could delete the lock file of every user", uid)
		}
	}
	return nil
}

// sharedFile checks, or makes, the database file every user can write.
func sharedFile(file string) error {
	bad := func(format string, args ...any) error {
		return exitf(ExitUnavailable, "dlock: default backend: file %s %s; set --backend or $%s, or have its owner or root run: chmod 0666 %s", file, fmt.Sprintf(format, args...), EnvBackend, file)
	}
	if _, err := os.Lstat(file); errors.Is(err, fs.ErrNotExist) {
		// Made under a temporary name with its mode set (the create's
		// passes through the umask) before SQLite ever opens it and
		// copies that mode to -wal and -shm, then linked into place.
		f, err := os.CreateTemp(filepath.Dir(file), ".dlock.db-")
		if err != nil {
			return bad("cannot be made: %s", clean(err))
		}
		tmp := f.Name()
		cerr := f.Chmod(0o666)
		f.Close()
		if cerr == nil {
			if err := os.Link(tmp, file); err != nil && !errors.Is(err, fs.ErrExist) {
				cerr = err
			}
		}
		os.Remove(tmp)
		if cerr != nil {
			return bad("cannot be made: %s", clean(cerr))
		}
	}
	fi, err := os.Lstat(file)
	switch {
	case err != nil:
		return bad("cannot be used: %s", clean(err))
	case !fi.Mode().IsRegular():
		return bad("is not a regular file")
	case fi.Mode().Perm()&0o066 != 0o066:
		return bad("has mode %v, want 0666 (readable and writable by every user, or users would not exclude each other)", fi.Mode().Perm())
	}
	return nil
}

// open resolves the backend and opens it within the connect timeout (and
// ctx). Errors are *exitError with one line that never holds a password.
func (b *backendFlags) open(ctx context.Context, opts ...dlock.Option) (*dlock.Client, string, error) {
	raw, err := b.resolve()
	if err != nil {
		return nil, "", err
	}
	if err := checkURL(raw); err != nil {
		return nil, "", err
	}
	shown := redact(raw)
	octx, cancel := context.WithTimeout(ctx, *b.timeout)
	defer cancel()
	c, err := dlock.Open(octx, raw, opts...)
	if err != nil {
		return nil, shown, backendError(ctx, octx, err, "cannot open backend "+shown)
	}
	return c, shown, nil
}

// redact returns raw for display: with any password, and the values of
// query parameters that look like secrets, hidden.
func redact(raw string) string {
	// Whatever the URL's shape (an opaque "postgres:u:pw@host" too), no
	// text that could be its password is shown.
	return driver.RedactError(errors.New(redactParsed(raw)), raw).Error()
}

func redactParsed(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	changed := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			changed = true
		}
	}
	q := u.Query()
	for name := range q {
		if secretParam(name) {
			q[name] = []string{"xxxxx"}
			changed = true
		}
	}
	if !changed {
		return raw
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func secretParam(name string) bool {
	name = strings.ToLower(name)
	for _, s := range []string{"pass", "pwd", "secret", "token", "auth", "cred"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// checkURL reports a URL that does not parse, with driver.ParseURL's
// reason.
func checkURL(raw string) error {
	_, err := driver.ParseURL(raw)
	if err == nil {
		return nil
	}
	// ParseURL describes what is wrong without quoting the URL, so its
	// reason never shows a password.
	return exitf(ExitUsage, "dlock: backend URL is not valid: %s", clean(err))
}

// backendError turns an error from the backend into an *exitError: invalid
// URLs, keys and TTLs are usage errors; the rest means the backend is
// unavailable. ctx is the command's context (cancelled by a signal), opctx
// the operation's own bounded context.
func backendError(ctx, opctx context.Context, err error, what string) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	if se := signalCause(ctx); se != nil {
		return exitf(se.code(), "dlock: %s: %v", what, se)
	}
	switch {
	case errors.Is(err, dlock.ErrInvalidOption), errors.Is(err, dlock.ErrInvalidKey), errors.Is(err, dlock.ErrInvalidTTL),
		errors.Is(err, dlock.ErrLimitMismatch):
		return exitf(ExitUsage, "dlock: %s: %s", what, clean(err))
	case opctx != nil && errors.Is(opctx.Err(), context.DeadlineExceeded) && errors.Is(err, context.DeadlineExceeded):
		return exitf(ExitUnavailable, "dlock: %s: no answer in time (%s)", what, clean(err))
	}
	return exitf(ExitUnavailable, "dlock: %s: %s", what, clean(err))
}
