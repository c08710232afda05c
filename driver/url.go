package driver

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// URL is a parsed backend URL whose query parameters are consumed one by one
// by the opener. Whatever is left when the opener calls Finish is an error,
// so a misspelt parameter never passes silently.
type URL struct {
	*url.URL
	query url.Values
	err   error
}

// ParseURL parses s. Errors never include the password.
func ParseURL(s string) (*URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Error and its reasons repeat parts of the input, which may
		// hold a password: explain with the user information removed.
		reason := "invalid user information"
		if _, rerr := url.Parse(stripUserinfo(s)); rerr != nil {
			reason = unwrapURLError(rerr).Error()
		}
		return nil, fmt.Errorf("%w: cannot parse backend URL: %s", ErrInvalidOption, reason)
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("%w: backend URL %q has no scheme", ErrInvalidOption, u.Redacted())
	}
	return &URL{URL: u, query: u.Query()}, nil
}

// stripUserinfo replaces the user information of scheme://userinfo@host/...
// with "redacted".
func stripUserinfo(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	rest := s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return s
	}
	return s[:i+3] + "redacted" + rest[at:]
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// Redacted returns the URL with any password replaced by "xxxxx".
func (u *URL) Redacted() string { return u.URL.Redacted() }

// Has reports whether parameter name is present (and not yet consumed).
func (u *URL) Has(name string) bool {
	_, ok := u.query[name]
	return ok
}

// String consumes parameter name and returns its value, or def when absent.
// A parameter given more than once is an error.
func (u *URL) String(name, def string) string {
	vs, ok := u.query[name]
	if !ok {
		return def
	}
	delete(u.query, name)
	if len(vs) > 1 {
		u.fail(fmt.Errorf("%w: parameter %q given %d times", ErrInvalidOption, name, len(vs)))
	}
	return vs[len(vs)-1]
}

// Duration consumes parameter name as a Go duration ("5s", "250ms"); a bare
// integer is read as seconds. It returns def when absent.
func (u *URL) Duration(name string, def time.Duration) time.Duration {
	if !u.Has(name) {
		return def
	}
	s := u.String(name, "")
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		u.fail(fmt.Errorf("%w: parameter %q: %q is not a duration", ErrInvalidOption, name, s))
		return def
	}
	return d
}

// Int consumes parameter name as a decimal integer, or returns def.
func (u *URL) Int(name string, def int) int {
	if !u.Has(name) {
		return def
	}
	s := u.String(name, "")
	n, err := strconv.Atoi(s)
	if err != nil {
		u.fail(fmt.Errorf("%w: parameter %q: %q is not an integer", ErrInvalidOption, name, s))
		return def
	}
	return n
}

// Bool consumes parameter name as a boolean ("true", "false", "1", "0",
// "yes", "no", "on", "off"), or returns def.
func (u *URL) Bool(name string, def bool) bool {
	if !u.Has(name) {
		return def
	}
	s := u.String(name, "")
	switch strings.ToLower(s) {
	case "1", "t", "true", "yes", "on":
		return true
	case "0", "f", "false", "no", "off":
		return false
	}
	u.fail(fmt.Errorf("%w: parameter %q: %q is not a boolean", ErrInvalidOption, name, s))
	return def
}

// Fail records err as the URL's error unless one is already recorded; Finish
// returns it. Openers use it for values they validate themselves.
func (u *URL) Fail(err error) { u.fail(err) }

func (u *URL) fail(err error) {
	if u.err == nil {
		u.err = err
	}
}

// Finish returns the first error met while consuming parameters, or an error
// naming the parameters nobody consumed, or nil.
func (u *URL) Finish() error {
	if u.err != nil {
		return u.err
	}
	if len(u.query) == 0 {
		return nil
	}
	names := make([]string, 0, len(u.query))
	for k := range u.query {
		names = append(names, k)
	}
	sort.Strings(names)
	return fmt.Errorf("%w: unknown parameter(s) %s in %s URL", ErrInvalidOption, strings.Join(names, ", "), u.Scheme)
}
