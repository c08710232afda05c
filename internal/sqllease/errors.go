package sqllease

import (
	"fmt"
	"strings"

	"github.com/dlock-go/dlock/driver"
)

// Server is what the errors of a PostgreSQL or MySQL driver name, for
// embedding in the driver: its package, backend, address and table, and
// the password they must never show.
type Server struct {
	// Package is the driver's package ("pgdlock"), which prefixes the
	// errors of statements the server refused.
	Package string
	// Backend is the backend as errors matching driver.ErrUnavailable name
	// it ("postgres").
	Backend string
	// Addr is the server's host:port, or "" for a handle the application
	// gave.
	Addr string
	// Secret is the password, replaced wherever it would show in a message.
	Secret string
	// Table is the lock table.
	Table Table
	// Refused reports whether err is the server refusing a statement: a SQL
	// error that does not mean the server is going away or cannot take the
	// connection.
	Refused func(err error) bool
}

// Wrap classifies the error of operation op: a statement the server
// refused gives "<Package>: <op> (table <Table>): <err>", wrapping err;
// anything else (a lost or refused connection, a server going away) gives
// Unavailable's error, naming the backend and address, with op before the
// cause.
func (s *Server) Wrap(op string, err error) error {
	if s.Refused(err) {
		return fmt.Errorf("%s: %s (table %s): %w", s.Package, op, s.Table, err)
	}
	return s.Unavailable(fmt.Errorf("%s: %w", op, err))
}

// Unavailable is Unavailable(s.Backend, s.Addr, s.Secret, cause).
func (s *Server) Unavailable(cause error) error {
	return Unavailable(s.Backend, s.Addr, s.Secret, cause)
}

// Unavailable returns an error matching driver.ErrUnavailable (and cause)
// that names the backend and its address. Any occurrence of secret (the
// password) in the cause's message is replaced.
func Unavailable(backend, addr, secret string, cause error) error {
	return &unavailable{backend: backend, addr: addr, secret: secret, cause: cause}
}

type unavailable struct {
	backend, addr, secret string
	cause                 error
}

func (e *unavailable) Error() string {
	where := e.backend
	if e.addr != "" {
		where += " at " + e.addr
	}
	return fmt.Sprintf("%v: %s: %s", driver.ErrUnavailable, where, Redact(e.cause.Error(), e.secret))
}

func (e *unavailable) Unwrap() []error { return []error{driver.ErrUnavailable, e.cause} }

// Redact replaces every occurrence of secret in msg.
func Redact(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "xxxxx")
}

// NotHeld is the error of a refresh or release whose key the token does
// not own.
func NotHeld(key string) error {
	return fmt.Errorf("%w: %q", driver.ErrNotHeld, key)
}
