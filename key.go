package dlock

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/dlock-go/dlock/driver"
)

// MaxKeyLen is the longest key, in bytes.
const MaxKeyLen = 1024

// MinTTL is the shortest TTL the portable layer accepts. Drivers may
// require more (see each driver's documentation).
const MinTTL = 10 * time.Millisecond

// ValidateKey reports whether key is a valid lock key: a non-empty UTF-8
// string of at most MaxKeyLen bytes. The error matches ErrInvalidKey.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key is %d bytes, more than %d", ErrInvalidKey, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key is not valid UTF-8", ErrInvalidKey)
	}
	return nil
}

// MaxTTL is the longest TTL the portable layer accepts on any backend
// (9e9 s, about 285 years): long enough for a lock that never lapses, short
// enough that no deadline computed from it can overflow. Each backend
// declares its own maximum, at most this (Client.Capabilities().MaxTTL); a
// longer TTL is an error matching ErrInvalidTTL.
const MaxTTL = driver.MaxTTL

func validateTTL(ttl time.Duration) error {
	if ttl < MinTTL {
		return fmt.Errorf("%w: %v (must be at least %v)", ErrInvalidTTL, ttl, MinTTL)
	}
	return nil
}
