// Package urltest checks, across every registered driver, that no error
// from dlock.Open (or a driver's own URL opener) shows the URL's password,
// whatever the shape of the URL.
package urltest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/etcddlock"
	_ "github.com/dlock-go/dlock/memdlock"
	_ "github.com/dlock-go/dlock/mysqldlock"
	"github.com/dlock-go/dlock/pgdlock"
	_ "github.com/dlock-go/dlock/redisdlock"
	_ "github.com/dlock-go/dlock/redlock"
	_ "github.com/dlock-go/dlock/sqlitedlock"
	"github.com/dlock-go/dlock/zkdlock"
)

// marker starts every generated password; no other piece contains it.
const marker = "Zq7S3cr"

// shapes put scheme, user information, host, path and query together,
// well-formed and in the malformed ways users write them.
var shapes = []string{
	"%s://%s@%s%s%s", // scheme://user:password@host/path?query
	"%s//%s@%s%s%s",  // no ':' after the scheme
	"%s:/%s@%s%s%s",  // one '/'
	"%s:%s@%s%s%s",   // no '/': opaque
	"%s:///%s@%s%s%s",
	"%s://%s@@%s%s%s",
	"%s://%s@%s%s%s#frag",
}

// Every host is on the loopback interface (port 1: nothing listens), or a
// socket path that does not exist, or none.
var hosts = []string{
	"127.0.0.1:1", "[::1]:1", "localhost:1", "127.0.0.1:1,127.0.0.1:2", "",
	"%2Ftmp%2Fdlock-urltest-none", "%2Ftmp%2Fdlock-urltest-none:1", "127.0.0.1:x", "127.0.0.1",
}

var paths = []string{"", "/", "/0", "/db", "/locks", "/mymaster/0", "/a/b", "/%zz"}

var queries = []string{
	"", "?sslmode=disable", "?bogus=1", "?host=%2Ftmp%2Fdlock-urltest-none", "?password=" + marker + "q",
	"?sslpassword=" + marker + "k", "?tls=skip-verify", "?dial_timeout=x", "?table=", "?sslmode=nonsense",
	"?socket=%2Ftmp%2Fdlock-urltest-none", "?connect_timeout=1&host=127.0.0.1&port=1",
	"?sentinel_password=" + marker + "s",
}

// The password encodings: as typed, percent-encoded as a URL needs, every
// byte percent-encoded.
const (
	encRaw = iota
	encURL
	encAll
	encodings
)

func encodeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

func FuzzOpenNeverShowsPassword(f *testing.F) {
	f.Chdir(f.TempDir()) // a relative SQLite path lands here
	schemes := dlock.Schemes()
	idx := func(name string) uint8 {
		for i, s := range schemes {
			if s == name {
				return uint8(i)
			}
		}
		f.Fatalf("scheme %s is not registered", name)
		return 0
	}
	// The shapes of the issue, each password variation, on every scheme.
	for _, pw := range []string{"", "cret", "c%2Fret", "c@t", "c:t", "c/t", "c?t", "c#t", "c%t", "c t", "ç"} {
		for s := range schemes {
			for shape := range shapes {
				for enc := range encodings {
					f.Add(uint8(s), uint8(shape), "app", pw, uint8(enc), uint8(0), uint8(2), uint8(0))
				}
			}
		}
	}
	// The five URLs of the report, as written there.
	f.Add(idx("redis"), uint8(1), "app", "", uint8(encRaw), uint8(0), uint8(2), uint8(0))
	f.Add(idx("redis"), uint8(2), "app", "", uint8(encRaw), uint8(0), uint8(2), uint8(0))
	f.Add(idx("postgres"), uint8(3), "app", "", uint8(encRaw), uint8(0), uint8(3), uint8(0))
	f.Add(idx("mysql"), uint8(2), "app", "", uint8(encRaw), uint8(0), uint8(3), uint8(0))
	f.Add(idx("etcd"), uint8(2), "app", "", uint8(encRaw), uint8(0), uint8(0), uint8(0))
	for q := range queries {
		for h := range hosts {
			f.Add(idx("postgres"), uint8(0), "app", "x", uint8(encURL), uint8(h), uint8(3), uint8(q))
			f.Add(idx("mysql"), uint8(0), "app", "x", uint8(encURL), uint8(h), uint8(3), uint8(q))
			f.Add(idx("redis+sentinel"), uint8(0), "app", "x", uint8(encURL), uint8(h), uint8(5), uint8(q))
		}
	}

	f.Fuzz(func(t *testing.T, scheme, shape uint8, user, pwTail string, enc, host, path, query uint8) {
		name := schemes[int(scheme)%len(schemes)]
		if containsMarker(user) {
			return // the user name would be mistaken for the password
		}
		pw := marker + pwTail
		var written string
		switch int(enc) % encodings {
		case encRaw:
			written = pw
		case encURL:
			written = strings.TrimPrefix(url.UserPassword("", pw).String(), ":")
		default:
			written = encodeAll(pw)
		}
		raw := fmt.Sprintf(shapes[int(shape)%len(shapes)], name, user+":"+written,
			hosts[int(host)%len(hosts)], paths[int(path)%len(paths)], queries[int(query)%len(queries)])
		if !safeToOpen(name, raw) {
			return
		}
		check := func(what string, err error) {
			t.Helper()
			if err == nil {
				return
			}
			msg := err.Error()
			for _, secret := range []string{marker, written, pw} {
				if strings.Contains(msg, secret) {
					t.Fatalf("%s(%q) error %q shows the password (%q)", what, raw, msg, secret)
				}
			}
		}
		check("Open", open(t, func(ctx context.Context) (func() error, error) {
			c, err := dlock.Open(ctx, raw)
			if err != nil {
				return nil, err
			}
			return c.Close, nil
		}))
		if name == pgdlock.Scheme {
			// The same pieces as a keyword/value string, quoted and not,
			// and the URL itself when it parses (pgx reads it with its own
			// parser; the hosts safeToOpen checked are the same then).
			dsns := []string{"host=127.0.0.1 port=1 user=app password=" + written + " sslmode=nonsense"}
			if q := queries[int(query)%len(queries)]; !strings.Contains(q, "host=") {
				dsns = append(dsns, "host=127.0.0.1 port=1 password='"+pw+"' "+strings.ReplaceAll(strings.TrimPrefix(q, "?"), "&", " "))
			}
			if _, err := driver.ParseURL(raw); err == nil {
				dsns = append(dsns, raw)
			}
			for _, dsn := range dsns {
				check("pgdlock.OpenDriver", open(t, func(ctx context.Context) (func() error, error) {
					d, err := pgdlock.OpenDriver(ctx, dsn, pgdlock.Options{})
					if err != nil {
						return nil, err
					}
					return d.Close, nil
				}))
			}
		}
		// The drivers' own OpenURL, given the parsed URL, redacts too.
		if openURL := urlOpeners[name]; openURL != nil {
			if u, err := driver.ParseURL(raw); err == nil {
				check(name+" OpenURL", open(t, func(ctx context.Context) (func() error, error) {
					d, err := openURL(ctx, u)
					if err != nil {
						return nil, err
					}
					return d.Close, nil
				}))
			}
		}
	})
}

// urlOpeners are the drivers' OpenURL functions, by scheme.
var urlOpeners = map[string]func(context.Context, *driver.URL) (driver.Locker, error){
	etcddlock.Scheme:    etcddlock.OpenURL,
	etcddlock.SchemeTLS: etcddlock.OpenURL,
	zkdlock.Scheme:      zkdlock.OpenURL,
}

func containsMarker(s string) bool {
	for _, d := range []func(string) (string, error){url.PathUnescape, url.QueryUnescape} {
		if v, err := d(s); err == nil && strings.Contains(v, marker) {
			return true
		}
	}
	return strings.Contains(s, marker)
}

// open calls fn with a context that has already ended, so that no driver
// gets as far as a request, fails the test if fn does not return within a
// deadline, and closes what it opened.
func open(t *testing.T, fn func(context.Context) (func() error, error)) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	type result struct {
		closer func() error
		err    error
	}
	done := make(chan result, 1)
	go func() {
		c, err := fn(ctx)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.closer != nil {
			_ = r.closer()
		}
		return r.err
	case <-time.After(30 * time.Second):
		t.Fatal("open did not return within 30s of a cancelled context")
		return nil
	}
}

// safeToOpen reports whether every address raw could make a driver dial is
// on the loopback interface or a Unix socket path, and whether an SQLite URL
// could only touch files under the working directory. A password holding an
// unencoded '@' can move the host: such URLs are skipped, not opened.
func safeToOpen(scheme, raw string) bool {
	u, err := driver.ParseURL(raw)
	if err != nil {
		return true // nothing to dial
	}
	if scheme == "sqlite" {
		p := u.Opaque
		if p == "" {
			p = u.Host + u.Path
		}
		return u.User != nil || !strings.HasPrefix(p, "/")
	}
	var addrs []string
	if u.Host != "" {
		addrs = append(addrs, strings.Split(u.Host, ",")...)
	}
	q := u.Query()
	for _, k := range []string{"host", "hostaddr"} {
		for _, v := range q[k] {
			addrs = append(addrs, strings.Split(v, ",")...)
		}
	}
	if u.Opaque != "" {
		// A driver that read an opaque URL's text as an address would dial
		// what follows the last '@'.
		rest := u.Opaque[strings.LastIndex(u.Opaque, "@")+1:]
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		addrs = append(addrs, strings.Split(rest, ",")...)
	}
	for _, a := range addrs {
		if strings.HasPrefix(a, "/") || a == "" {
			continue
		}
		h := a
		if hh, _, err := net.SplitHostPort(a); err == nil {
			h = hh
		}
		h = strings.Trim(h, "[]")
		if h != "localhost" && !isLoopback(h) {
			return false
		}
	}
	return true
}

func isLoopback(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
