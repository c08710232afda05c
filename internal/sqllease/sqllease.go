// Package sqllease holds what the SQL lock drivers share: the lock table's
// name rules, TTL arithmetic, in-process release fan-out, error helpers
// that keep passwords out of messages (PostgreSQL and MySQL), the
// bookkeeping of batched refreshes and the batched range scans of List (all
// three, SQLite included).
package sqllease

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// DefaultTable is the lock table's default name.
const DefaultTable = "dlock_locks"

// maxIdent is the longest identifier part accepted: PostgreSQL's limit
// (63 bytes); MySQL allows 64.
const maxIdent = 63

// Table is a validated table name, optionally qualified by a schema (a
// database on MySQL).
type Table struct {
	Schema, Name string
}

// ParseTable validates s: "name" or "schema.name", where each part is
// ASCII letters, digits and '_', not starting with a digit, at most 63
// bytes. Names are used exactly as given (quoted, so case-sensitive).
func ParseTable(s string) (Table, error) {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return Table{}, fmt.Errorf("%w: table %q: at most one '.' (schema.table)", driver.ErrInvalidOption, s)
	}
	for _, p := range parts {
		if !validIdent(p) {
			return Table{}, fmt.Errorf("%w: table %q: each part must be 1-%d ASCII letters, digits or '_', not starting with a digit", driver.ErrInvalidOption, s, maxIdent)
		}
	}
	if len(parts) == 2 {
		return Table{Schema: parts[0], Name: parts[1]}, nil
	}
	return Table{Name: parts[0]}, nil
}

func validIdent(s string) bool {
	if s == "" || len(s) > maxIdent {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// String returns the name as given: "name" or "schema.name".
func (t Table) String() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// Quote returns the name quoted with q on each part: `"s"."t"` for
// PostgreSQL, "`s`.`t`" for MySQL. The parts are validated, so no quote
// character can occur inside.
func (t Table) Quote(q string) string {
	if t.Schema == "" {
		return q + t.Name + q
	}
	return q + t.Schema + q + "." + q + t.Name + q
}

// Hash returns a short hex digest of s, for names derived from a key or a
// table (notification payloads, advisory lock names).
func Hash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:])
	if n > 0 && n < len(h) {
		h = h[:n]
	}
	return h
}

// Micros converts a TTL to whole microseconds, rounding up so that the
// lease the server keeps is never shorter than asked.
func Micros(ttl time.Duration) int64 {
	us := int64(ttl / time.Microsecond)
	if ttl%time.Microsecond > 0 {
		us++
	}
	return us
}

// Millis converts a TTL to whole milliseconds, rounding up so that the
// lease the database keeps is never shorter than asked. It cannot overflow,
// whatever the TTL.
func Millis(ttl time.Duration) int64 {
	ms := int64(ttl / time.Millisecond)
	if ttl%time.Millisecond > 0 {
		ms++
	}
	return ms
}

// FromMillis converts a remaining lease in milliseconds to a duration; zero
// or less gives zero, and a lease longer than any time.Duration (a row
// written by hand) gives the longest one.
func FromMillis(ms int64) time.Duration {
	switch {
	case ms <= 0:
		return 0
	case ms > math.MaxInt64/int64(time.Millisecond):
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// FromMicros converts a remaining lease in microseconds to a duration; zero
// or less gives zero.
func FromMicros(us int64) time.Duration {
	switch {
	case us <= 0:
		return 0
	case us > math.MaxInt64/int64(time.Microsecond):
		return math.MaxInt64
	}
	return time.Duration(us) * time.Microsecond
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

// IsContext reports whether err is, or wraps, a context error.
func IsContext(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// TableParams consumes a URL's table and create_table parameters: table
// replaces table, create_table=false sets skipCreate (true clears it); an
// absent parameter leaves its value as given. An empty table parameter is
// an error recorded on u (see driver.URL.Fail).
func TableParams(u *driver.URL, table string, skipCreate bool) (string, bool) {
	if u.Has("table") {
		if table = u.String("table", ""); table == "" {
			u.Fail(fmt.Errorf("%w: parameter \"table\" is empty", driver.ErrInvalidOption))
		}
	}
	return table, !u.Bool("create_table", !skipCreate)
}
