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
	raw   string
	query url.Values
	err   error
}

// ParseURL parses s. A host that is a percent-encoded absolute path, as
// libpq writes a Unix socket directory (postgres://%2Frun%2Fpostgresql/db),
// is decoded into Host ("/run/postgresql"); other percent-escapes in a host
// are an error, as in net/url. Errors never include the password, nor any
// part of s that could hold one: a URL that does not parse is described,
// not quoted.
func ParseURL(s string) (*URL, error) {
	u, err := parse(s)
	if err != nil {
		return nil, RedactError(fmt.Errorf("%w: cannot parse backend URL: %s", ErrInvalidOption, parseReason(s)), s)
	}
	if u.Scheme == "" {
		msg := "backend URL has no scheme; want scheme://host..."
		if i := strings.Index(s, "//"); i > 0 && validScheme(s[:i]) {
			msg = fmt.Sprintf("backend URL has no scheme: a ':' is missing after %q (want %s://host...)", s[:i], s[:i])
		}
		return nil, RedactError(fmt.Errorf("%w: %s", ErrInvalidOption, msg), s)
	}
	return &URL{URL: u, raw: s, query: u.Query()}, nil
}

// parse is url.Parse, plus a host that is a percent-encoded absolute path.
func parse(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err == nil {
		return u, nil
	}
	// scheme://[userinfo@]%2Fpath[:port]/...: parse with a placeholder host.
	i := strings.Index(s, "://")
	if i < 0 {
		return nil, err
	}
	rest := s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	host := rest[at+1 : end]
	if !strings.HasPrefix(strings.ToUpper(host), "%2F") {
		return nil, err
	}
	port := ""
	if c := strings.LastIndex(host, ":"); c >= 0 {
		host, port = host[:c], host[c:]
	}
	decoded, derr := url.PathUnescape(host)
	if derr != nil || strings.ContainsAny(decoded, ",?#@") {
		return nil, err
	}
	u, perr := url.Parse(s[:i+3] + rest[:at+1] + "socket.invalid" + port + rest[end:])
	if perr != nil {
		return nil, err
	}
	u.Host = decoded + port
	return u, nil
}

// parseReason explains why s does not parse without quoting it.
func parseReason(s string) string {
	if strings.ContainsRune(s, 0) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "it contains a control character"
	}
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		end := strings.IndexAny(rest, "/?#")
		if end >= 0 && strings.Contains(rest[end:], "@") && strings.Contains(rest[:end], ":") {
			return "the user information seems to contain '/', '?' or '#': percent-encode them in a user name or password (%2F, %3F, %23)"
		}
		if end < 0 {
			end = len(rest)
		}
		if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
			if _, err := url.Parse(s[:i+3] + "user@" + rest[at+1:]); err == nil {
				return "the user information holds a character that must be percent-encoded ('@', ':' in a user name, '%' not followed by two hex digits, a space, ...)"
			}
		}
		if strings.Contains(rest[:end], "%") {
			return "bad percent-encoding in the host"
		}
		if strings.Contains(rest[:end], "[") || strings.Contains(rest[:end], "]") {
			return "bad IPv6 address in the host (want [addr]:port)"
		}
		return "bad host or port (want scheme://host:port/...)"
	}
	if strings.Contains(s, "%") {
		return "bad percent-encoding ('%' must be followed by two hex digits)"
	}
	if strings.HasPrefix(s, ":") {
		return "missing scheme before ':'"
	}
	return "not a URL (want scheme://host...)"
}

func validScheme(s string) bool {
	for i, c := range s {
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// RedactError returns err with every text in its message that could be the
// password of rawURL replaced by "xxxxx": the password as written (between
// the first ':' of the user information and an '@', for every '@', so that
// malformed URLs are covered too) and percent-decoded. errors.Is and
// errors.As see err unchanged. Openers use it on errors of client libraries
// that may quote what they were given; dlock.Open applies it to every error.
func RedactError(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	return redactSecrets(err, Secrets(rawURL))
}

// RedactError is RedactError(err, the URL as given to ParseURL), with the
// decoded password and the password and sslpassword query parameters added.
func (u *URL) RedactError(err error) error {
	if err == nil {
		return nil
	}
	secrets := Secrets(u.raw)
	if u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			secrets = append(secrets, pw)
		}
	}
	for _, name := range []string{"password", "sslpassword", "sentinel_password"} {
		for _, v := range u.URL.Query()[name] {
			if v != "" {
				secrets = append(secrets, v, url.QueryEscape(v))
			}
		}
	}
	return redactSecrets(err, secrets)
}

// redactSecrets returns err with every one of secrets in its message
// replaced, or err itself when its message holds none.
func redactSecrets(err error, secrets []string) error {
	if len(secrets) == 0 {
		return err
	}
	msg := err.Error()
	red := redact(msg, secrets)
	if red == msg {
		return err
	}
	return &redactedError{msg: red, err: err}
}

// Secrets returns the texts of rawURL that could be a password: for each
// '@', what lies between the first ':' after the scheme and that '@', as
// written and percent-decoded; and the values of password-like query
// parameters. It over-approximates on purpose.
func Secrets(rawURL string) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s)
		if d, err := url.PathUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
		if d, err := url.QueryUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
	}
	rest := rawURL
	if i := strings.Index(rest, ":"); i > 0 && validScheme(rest[:i]) {
		rest = rest[i+1:]
	} else if i := strings.Index(rest, "//"); i > 0 && validScheme(rest[:i]) {
		rest = rest[i:]
	}
	rest = strings.TrimLeft(rest, "/")
	colon := strings.Index(rest, ":")
	if colon >= 0 {
		for at := 0; at < len(rest); at++ {
			if rest[at] == '@' && at > colon {
				add(rest[colon+1 : at])
			}
		}
	}
	// password=..., sslpassword=... anywhere (query or keyword/value text).
	for _, key := range []string{"password=", "sslpassword=", "sentinel_password="} {
		for s := rawURL; ; {
			i := strings.Index(strings.ToLower(s), key)
			if i < 0 {
				break
			}
			s = s[i+len(key):]
			end := strings.IndexAny(s, "& ")
			if end < 0 {
				end = len(s)
			}
			add(strings.Trim(s[:end], "'"))
		}
	}
	return out
}

func redact(msg string, secrets []string) string {
	// Longest first, so that a secret containing another is replaced whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

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

// CheckForm returns an error matching ErrInvalidOption, naming the scheme
// and form (the URL shape to use, e.g. "redis://host:port/db"), when u is not
// of the hierarchical form scheme://...: an opaque URL (scheme:host...,
// without "//") or a path-only one (scheme:/...). Such URLs would otherwise
// be read as having no host, and the user information written in them as a
// path. The message never quotes u.
func (u *URL) CheckForm(form string) error {
	if u.Opaque != "" || u.OmitHost || (u.Host == "" && u.User == nil && !strings.HasPrefix(u.Path, "/") && u.Path != "") {
		return fmt.Errorf("%w: %s URL is missing the \"//\" after %q: use %s", ErrInvalidOption, u.Scheme, u.Scheme+":", form)
	}
	return nil
}

// RequireHost is CheckForm, and then an error matching ErrInvalidOption,
// naming the scheme and form, when u has no host: a backend that needs a
// server must not fall back to a default one.
func (u *URL) RequireHost(form string) error {
	if err := u.CheckForm(form); err != nil {
		return err
	}
	if u.Host == "" {
		return fmt.Errorf("%w: %s URL names no host: use %s", ErrInvalidOption, u.Scheme, form)
	}
	return nil
}
