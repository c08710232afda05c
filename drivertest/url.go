package drivertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// URLCases are the URLs RunURLTests opens with dlock.Open, so the driver's
// package must be imported (its init registers its schemes). Each field
// left empty skips its subtest.
type URLCases struct {
	// Secret is a password (or another secret) that the URLs of Invalid,
	// Unreachable and WrongSecret carry: no error may contain it.
	Secret string
	// Valid are URLs that must open; each Client takes and releases a lock.
	Valid []string
	// Invalid are URLs that Open must refuse, before connecting, with an
	// error matching dlock.ErrInvalidOption that contains Want (the
	// parameter or the part of the URL it names).
	Invalid []InvalidURL
	// Unreachable returns a URL of a server at addr ("host:port") with
	// Secret as its password. Open must fail, within its 500 ms deadline
	// and some slack, with an error matching dlock.ErrUnavailable that
	// names Backend and addr, for an address that refuses connections and
	// one that accepts them and never answers.
	Unreachable func(addr string) string
	// Backend is the name errors give the backend ("postgres").
	Backend string
	// WrongSecret is a URL of a running server with a wrong password,
	// Secret. Open must fail with an error matching dlock.ErrUnavailable
	// that names WrongSecretAddr (when set) and not the password.
	WrongSecret     string
	WrongSecretAddr string
	// MissingTable is a URL naming a lock table that does not exist, with
	// create_table=false. Open must fail with an error that names
	// MissingTableName and does not match dlock.ErrUnavailable.
	MissingTable     string
	MissingTableName string
	// ConcurrentCreate is a URL naming a lock table that does not exist
	// yet. Twelve Opens at once, as processes starting together would,
	// must all succeed.
	ConcurrentCreate string
}

// InvalidURL is a URL that Open refuses, and what its error must contain.
type InvalidURL struct {
	URL, Want string
}

// RunURLTests checks a driver's URL handling through dlock.Open: the URLs
// that open and take a lock, the URLs refused with dlock.ErrInvalidOption
// naming the problem, errors for unreachable servers and wrong passwords,
// a missing table, and a table created by many clients at once. No error may
// contain cases.Secret, nor blame "special characters" (what net/url says
// of some passwords). A driver's url_test.go calls it with its table of
// cases and keeps what is backend-specific (which settings reach the native
// client, which table a URL made):
//
//	func TestURLs(t *testing.T) {
//		srv := startServer(t)
//		drivertest.RunURLTests(t, drivertest.URLCases{
//			Secret:  "s3cret",
//			Valid:   []string{srv.URL(), srv.URL() + "?table=other"},
//			Invalid: []drivertest.InvalidURL{{URL: "x://u:s3cret@h/db?tabel=x", Want: "tabel"}},
//		})
//	}
func RunURLTests(t *testing.T, cases URLCases) {
	t.Helper()
	t.Run("Valid", func(t *testing.T) { skipEmpty(t, len(cases.Valid)); testValidURLs(t, cases) })
	t.Run("Invalid", func(t *testing.T) { skipEmpty(t, len(cases.Invalid)); testInvalidURLs(t, cases) })
	t.Run("Unreachable", func(t *testing.T) {
		if cases.Unreachable == nil {
			t.Skip("no Unreachable URL")
		}
		testUnreachable(t, cases)
	})
	t.Run("WrongSecret", func(t *testing.T) { skipEmpty(t, len(cases.WrongSecret)); testWrongSecret(t, cases) })
	t.Run("MissingTable", func(t *testing.T) { skipEmpty(t, len(cases.MissingTable)); testMissingTable(t, cases) })
	t.Run("ConcurrentCreate", func(t *testing.T) {
		skipEmpty(t, len(cases.ConcurrentCreate))
		testConcurrentCreate(t, cases)
	})
}

func skipEmpty(t *testing.T, n int) {
	t.Helper()
	if n == 0 {
		t.Skip("no cases")
	}
}

// urlCtx returns a context for one URL case, ended after d.
func urlCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkSecret fails t when err's message shows the secret or blames special
// characters.
func (c URLCases) checkSecret(t *testing.T, what string, err error) {
	t.Helper()
	msg := fmt.Sprint(err)
	if c.Secret != "" && strings.Contains(msg, c.Secret) {
		t.Errorf("%s: error %q shows the password", what, msg)
	}
	if strings.Contains(msg, "special character") {
		t.Errorf("%s: error %q blames special characters", what, msg)
	}
}

func testValidURLs(t *testing.T, c URLCases) {
	ctx := urlCtx(t, 60*time.Second)
	key := uniquePrefix(t) + "valid"
	for _, raw := range c.Valid {
		cl, err := dlock.Open(ctx, raw)
		if err != nil {
			t.Errorf("Open(%s): %v", raw, err)
			continue
		}
		l, err := cl.TryLock(ctx, key)
		if err != nil {
			t.Errorf("TryLock via %s: %v", raw, err)
		} else if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock via %s: %v", raw, err)
		}
		_ = cl.Close()
	}
}

func testInvalidURLs(t *testing.T, c URLCases) {
	for _, tc := range c.Invalid {
		cl, err := dlock.Open(urlCtx(t, 10*time.Second), tc.URL)
		if err == nil {
			_ = cl.Close()
			t.Errorf("Open(%q) succeeded, want ErrInvalidOption", tc.URL)
			continue
		}
		if !errors.Is(err, dlock.ErrInvalidOption) || !strings.Contains(err.Error(), tc.Want) {
			t.Errorf("Open(%q) = %v, want ErrInvalidOption containing %q", tc.URL, err, tc.Want)
		}
		c.checkSecret(t, fmt.Sprintf("Open(%q)", tc.URL), err)
	}
}

// silentServer listens on loopback and accepts connections that it never
// answers, until t ends. It returns its address.
func silentServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func testUnreachable(t *testing.T, c URLCases) {
	for _, addr := range []string{refusedAddr(t), silentServer(t)} {
		t.Run(addr, func(t *testing.T) {
			ctx := urlCtx(t, 500*time.Millisecond)
			start := time.Now()
			cl, err := dlock.Open(ctx, c.Unreachable(addr))
			took := time.Since(start)
			if err == nil {
				_ = cl.Close()
				t.Fatal("Open of an unreachable server succeeded")
			}
			if !errors.Is(err, dlock.ErrUnavailable) {
				t.Errorf("Open = %v, want ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), c.Backend) {
				t.Errorf("error %q does not name %s at %s", err, c.Backend, addr)
			}
			c.checkSecret(t, "Open", err)
			if took > 5*time.Second {
				t.Errorf("Open took %v with a 500ms deadline", took)
			}
		})
	}
}

func testWrongSecret(t *testing.T, c URLCases) {
	_, err := dlock.Open(urlCtx(t, 60*time.Second), c.WrongSecret)
	if !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(fmt.Sprint(err), c.WrongSecretAddr) {
		t.Errorf("Open with a wrong password = %v, want ErrUnavailable naming %q", err, c.WrongSecretAddr)
	}
	c.checkSecret(t, "Open with a wrong password", err)
}

func testMissingTable(t *testing.T, c URLCases) {
	cl, err := dlock.Open(urlCtx(t, 60*time.Second), c.MissingTable)
	if err == nil {
		_ = cl.Close()
		t.Fatal("Open succeeded without the table and create_table=false")
	}
	if errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), c.MissingTableName) {
		t.Fatalf("Open = %v, want an error naming the missing table %s", err, c.MissingTableName)
	}
}

func testConcurrentCreate(t *testing.T, c URLCases) {
	ctx := urlCtx(t, 60*time.Second)
	const n = 12
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := dlock.Open(ctx, c.ConcurrentCreate)
			if err != nil {
				errs <- fmt.Errorf("open %d: %w", i, err)
				return
			}
			_ = cl.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// OpenURL opens raw with opener, as dlock.OpenWith does, for a driver's
// tests of its URLOpener: it fails t when raw does not parse or the opener
// refuses it, and closes the driver when t ends (its error ignored, so a
// test may close the driver itself first).
func OpenURL(ctx context.Context, t testing.TB, opener driver.URLOpener, raw string) driver.Locker {
	t.Helper()
	u, err := driver.ParseURL(raw)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", raw, err)
	}
	d, err := opener.OpenLockerURL(ctx, u)
	if err != nil {
		t.Fatalf("OpenLockerURL(%q): %v", raw, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}
