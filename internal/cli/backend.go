package cli

import (
	"context"
	"errors"
	"flag"
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

// backendFlags are the flags every command that talks to a backend shares.
type backendFlags struct {
	url     string
	timeout *time.Duration
}

func addBackendFlags(fs *flag.FlagSet) *backendFlags {
	b := &backendFlags{}
	fs.StringVar(&b.url, "backend", "", "backend `URL`, e.g. redis://127.0.0.1:6379 (default $"+EnvBackend+", else an SQLite file in the state directory)")
	b.timeout = durationFlag(fs, "connect-timeout", defaultConnectTimeout, "give up connecting to the backend, or on a single request, after `D`")
	return b
}

// resolve picks the backend URL: --backend, else $DLOCK_BACKEND, else the
// SQLite file in the user's state directory (created with mode 0700).
func (b *backendFlags) resolve() (string, error) {
	if b.url != "" {
		return b.url, nil
	}
	if u := os.Getenv(EnvBackend); u != "" {
		return u, nil
	}
	dir, err := stateDir()
	if err != nil {
		return "", exitf(ExitUsage, "dlock: no backend: %s; set --backend or $%s", clean(err), EnvBackend)
	}
	dir = filepath.Join(dir, "dlock")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", exitf(ExitUnavailable, "dlock: default backend: %s", clean(err))
	}
	return (&url.URL{Scheme: "sqlite", Path: filepath.ToSlash(filepath.Join(dir, "locks.db"))}).String(), nil
}

// stateDir returns $XDG_STATE_HOME when it is an absolute path, else
// $HOME/.local/state.
func stateDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errors.New("cannot find the home directory ($HOME is not set)")
	}
	return filepath.Join(home, ".local", "state"), nil
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

// checkURL reports a URL that does not parse. Parse errors can quote parts
// of the URL, so when it holds credentials ("@") the reason is left out.
func checkURL(raw string) error {
	_, err := driver.ParseURL(raw)
	if err == nil {
		return nil
	}
	if strings.Contains(raw, "@") {
		return exitf(ExitUsage, "dlock: backend URL is not valid (a password with special characters must be percent-encoded)")
	}
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
	case errors.Is(err, dlock.ErrInvalidOption), errors.Is(err, dlock.ErrInvalidKey), errors.Is(err, dlock.ErrInvalidTTL):
		return exitf(ExitUsage, "dlock: %s: %s", what, clean(err))
	case opctx != nil && errors.Is(opctx.Err(), context.DeadlineExceeded) && errors.Is(err, context.DeadlineExceeded):
		return exitf(ExitUnavailable, "dlock: %s: no answer in time (%s)", what, clean(err))
	}
	return exitf(ExitUnavailable, "dlock: %s: %s", what, clean(err))
}
