// Package sqllease holds what the SQL lock drivers share: the lock table's
// name rules, TTL arithmetic, in-process release fan-out (Hub), the closed
// state (Closing), a key's row as a read sees it and what Inspect reports
// of it (Row), reading rows (ScanRows, QueryRows), the batched refreshes
// (RefreshBatch), the batched range scans of List and the read-then-free
// rounds of ForceRelease (all three drivers, SQLite included), and the
// errors that name the backend and keep passwords out of messages
// (Server, for PostgreSQL and MySQL).
package sqllease

import (
	"crypto/sha256"
	"encoding/hex"
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
// bytes; the empty s is DefaultTable (an Options.Table left empty). Names
// are used exactly as given (quoted, so case-sensitive).
func ParseTable(s string) (Table, error) {
	if s == "" {
		return Table{Name: DefaultTable}, nil
	}
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
// lease the server keeps is never shorter than asked. It cannot overflow,
// whatever the TTL.
func Micros(ttl time.Duration) int64 { return ceilUnits(ttl, time.Microsecond) }

// Millis converts a TTL to whole milliseconds, rounding up so that the
// lease the database keeps is never shorter than asked. It cannot overflow,
// whatever the TTL.
func Millis(ttl time.Duration) int64 { return ceilUnits(ttl, time.Millisecond) }

// FromMillis converts a remaining lease in milliseconds to a duration; zero
// or less gives zero, and a lease longer than any time.Duration (a row
// written by hand) gives the longest one.
func FromMillis(ms int64) time.Duration { return fromUnits(ms, time.Millisecond) }

// FromMicros converts a remaining lease in microseconds to a duration, as
// FromMillis does milliseconds.
func FromMicros(us int64) time.Duration { return fromUnits(us, time.Microsecond) }

// ceilUnits is d in whole units, rounded up: d/unit, plus one for a
// remainder (never d+unit-1, which wraps near the longest duration).
func ceilUnits(d, unit time.Duration) int64 {
	n := int64(d / unit)
	if d%unit > 0 {
		n++
	}
	return n
}

// fromUnits is n units as a duration: zero for n <= 0, the longest duration
// when n units are longer.
func fromUnits(n int64, unit time.Duration) time.Duration {
	switch {
	case n <= 0:
		return 0
	case n > math.MaxInt64/int64(unit):
		return math.MaxInt64
	}
	return time.Duration(n) * unit
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

// SharesSuffix ends the name of a lock table's companion table, which
// holds the shared grants and waiting writers of its keys.
const SharesSuffix = "_shares"

// Shares returns the companion table of t, in t's schema: t's name plus
// SharesSuffix, or, when that would pass 63 bytes, the first 46 bytes of
// the name, '_', 8 hex digits of its digest and SharesSuffix.
func (t Table) Shares() Table {
	name := t.Name + SharesSuffix
	if len(name) > maxIdent {
		name = t.Name[:46] + "_" + Hash(t.Name, 8) + SharesSuffix
	}
	return Table{Schema: t.Schema, Name: name}
}
