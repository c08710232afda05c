package dlock

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/dlock-go/dlock/driver"
)

var registry = struct {
	sync.RWMutex
	openers map[string]driver.URLOpener
}{openers: map[string]driver.URLOpener{}}

// Register makes a driver available to Open under scheme. Driver packages
// call it from init; applications import the driver package for its side
// effect, e.g. import _ "github.com/dlock-go/dlock/redisdlock". Register
// panics if scheme is registered twice, as that is a programming error.
func Register(scheme string, opener driver.URLOpener) {
	scheme = strings.ToLower(scheme)
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.openers[scheme]; dup {
		panic("dlock: Register called twice for scheme " + scheme)
	}
	registry.openers[scheme] = opener
}

// Schemes returns the registered URL schemes, sorted.
func Schemes() []string {
	registry.RLock()
	defer registry.RUnlock()
	s := make([]string, 0, len(registry.openers))
	for k := range registry.openers {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Open connects to the backend named by rawURL and returns a Client. The
// scheme picks the driver (see the README's URL table); the driver's package
// must be imported. Every query parameter must be one the driver documents:
// unknown ones are an error matching ErrInvalidOption. A URL that does not
// parse, has no scheme, or names an unknown scheme is an error matching
// ErrInvalidOption. Errors never contain the URL's password, whatever the
// shape of the URL: the text that could be one (see driver.Secrets) is
// replaced by "xxxxx" in every error Open returns, the driver's included.
func Open(ctx context.Context, rawURL string, opts ...Option) (*Client, error) {
	u, err := driver.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	scheme := strings.ToLower(u.Scheme)
	registry.RLock()
	opener := registry.openers[scheme]
	registry.RUnlock()
	if opener == nil {
		known := Schemes()
		list := "none (import a driver package)"
		if len(known) > 0 {
			list = strings.Join(known, ", ")
		}
		return nil, fmt.Errorf("%w: unknown backend scheme %q; registered: %s", ErrInvalidOption, u.Scheme, list)
	}
	return openWith(ctx, opener, u, opts)
}

// OpenWith opens rawURL with opener instead of the one registered for its
// scheme, and returns a Client. It is how a URL-opened client is configured
// in code: every driver package exports a URLOpener struct whose fields
// (its Options, TLS settings and the like) are the defaults the URL's query
// parameters override, e.g.
//
//	c, err := dlock.OpenWith(ctx, &redisdlock.URLOpener{TLSConfig: tlsCfg}, "rediss://cache:6380/0")
//
// The scheme is not looked up: opener decides which schemes it accepts.
// Errors never contain the URL's password, as with Open.
func OpenWith(ctx context.Context, opener driver.URLOpener, rawURL string, opts ...Option) (*Client, error) {
	if v := reflect.ValueOf(opener); opener == nil || v.Kind() == reflect.Pointer && v.IsNil() {
		return nil, fmt.Errorf("%w: OpenWith needs a non-nil URLOpener", ErrInvalidOption)
	}
	u, err := driver.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return openWith(ctx, opener, u, opts)
}

func openWith(ctx context.Context, opener driver.URLOpener, u *driver.URL, opts []Option) (*Client, error) {
	d, err := opener.OpenLockerURL(ctx, u)
	if err != nil {
		return nil, u.RedactError(err)
	}
	return NewClient(d, opts...), nil
}
