package driver

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseURLNeverShowsPassword(t *testing.T) {
	for _, s := range []string{
		"redis://user:p/ss@host:6379",
		"redis://user:s3cr%zzet@host:6379",
		"postgres://u:pw%@db:5432/x",
		"redis://user:s3cret@host:notaport",
		"mysql://u:s3cret@tcp(host:3306)/db",
	} {
		u, err := ParseURL(s)
		if err == nil {
			if strings.Contains(u.Redacted(), "s3cret") {
				t.Errorf("Redacted(%q) = %q shows the password", s, u.Redacted())
			}
			continue
		}
		if !errors.Is(err, ErrInvalidOption) {
			t.Errorf("ParseURL(%q) = %v, want ErrInvalidOption", s, err)
		}
		for _, secret := range []string{"p/ss", "s3cr", "pw%", "s3cret"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("ParseURL(%q) error %q shows the password", s, err)
			}
		}
	}
}

func TestURLParams(t *testing.T) {
	u, err := ParseURL("x://h/?ttl=5s&n=3&on=yes&secs=2&s=v&left=1")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Duration("ttl", 0); got != 5*time.Second {
		t.Errorf("Duration = %v, want 5s", got)
	}
	if got := u.Duration("secs", 0); got != 2*time.Second {
		t.Errorf("bare integer Duration = %v, want 2s", got)
	}
	if got := u.Int("n", 0); got != 3 {
		t.Errorf("Int = %d, want 3", got)
	}
	if got := u.Bool("on", false); !got {
		t.Errorf("Bool = false, want true")
	}
	if got := u.String("s", ""); got != "v" {
		t.Errorf("String = %q, want v", got)
	}
	if got := u.Duration("absent", time.Minute); got != time.Minute {
		t.Errorf("absent Duration = %v, want the default", got)
	}
	if err := u.Finish(); !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "left") {
		t.Errorf("Finish = %v, want an error naming the unknown parameter", err)
	}
	u, _ = ParseURL("x://h/?n=three")
	u.Int("n", 0)
	if err := u.Finish(); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Finish after a bad integer = %v, want ErrInvalidOption", err)
	}
}

// TestParseURLMalformedNeverQuotes: a URL that does not parse, or has no
// scheme, is described without quoting it, since any part of it may be a
// password.
func TestParseURLMalformedNeverQuotes(t *testing.T) {
	tests := []struct{ url, want string }{
		{"redis//app:s3cret@127.0.0.1:1/0", `a ':' is missing after "redis"`},
		{"//app:s3cret@127.0.0.1:1/0", "no scheme"},
		{"redis://app:s3c/ret@host/0", "percent-encode"},
		{"redis://app:s3c?ret@host/0", "percent-encode"},
		{"redis://app:s3c#ret@host/0", "percent-encode"},
		{"redis://app:s3cret@host:port/0", "bad host or port"},
		{"redis://app:s3c%zzret@host/0", "user information"},
		{"redis://app:s3cret@ho%zzst/0", "percent-encoding in the host"},
		{"redis://app:s3cret@[::1/0", "IPv6"},
		{"redis://app:s3cret\x01@host/0", "control character"},
		{":app:s3cret@host", "missing scheme"},
	}
	for _, tc := range tests {
		_, err := ParseURL(tc.url)
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURL(%q) = %v, want ErrInvalidOption containing %q", tc.url, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3c") {
			t.Errorf("ParseURL(%q) error %q shows the password", tc.url, err)
		}
	}
}

// TestParseURLSocketHost: a percent-encoded absolute path as the host (a
// Unix socket, as libpq writes it) is decoded into Host.
func TestParseURLSocketHost(t *testing.T) {
	tests := []struct{ url, host, path, user string }{
		{"postgres://%2Frun%2Fpostgresql/app", "/run/postgresql", "/app", ""},
		{"postgres://u:p%40w@%2frun%2Fpostgresql:5433/app?x=1", "/run/postgresql:5433", "/app", "u"},
		{"mysql://u@%2Frun%2Fmysqld%2Fmysqld.sock/db", "/run/mysqld/mysqld.sock", "/db", "u"},
	}
	for _, tc := range tests {
		u, err := ParseURL(tc.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if u.Host != tc.host || u.Path != tc.path || u.User.Username() != tc.user {
			t.Errorf("ParseURL(%q): host %q path %q user %q, want %q %q %q", tc.url, u.Host, u.Path, u.User.Username(), tc.host, tc.path, tc.user)
		}
	}
	if _, err := ParseURL("redis://ho%41st/0"); err == nil {
		t.Errorf("ParseURL with an escaped ASCII host that is not a path succeeded, want an error")
	}
}

func TestCheckForm(t *testing.T) {
	tests := []struct {
		url      string
		form     bool // CheckForm passes
		hostOK   bool // RequireHost passes
		wantText string
	}{
		{"x://h:1/p", true, true, ""},
		{"x://u:pw@h/p", true, true, ""},
		{"x://", true, false, "x URL names no host: use x://h"},
		{"x:///p", true, false, "names no host"},
		{"x:h:1", false, false, `x URL is missing the "//" after "x:": use x://h`},
		{"x:u:pw@h/p", false, false, `missing the "//"`},
		{"x:/u:pw@h/p", false, false, `missing the "//"`},
	}
	for _, tc := range tests {
		u, err := ParseURL(tc.url)
		if err != nil {
			t.Fatalf("ParseURL(%q): %v", tc.url, err)
		}
		ferr, herr := u.CheckForm("x://h"), u.RequireHost("x://h")
		if (ferr == nil) != tc.form || (herr == nil) != tc.hostOK {
			t.Errorf("%q: CheckForm = %v, RequireHost = %v; want passes %v, %v", tc.url, ferr, herr, tc.form, tc.hostOK)
			continue
		}
		if herr != nil && (!errors.Is(herr, ErrInvalidOption) || !strings.Contains(herr.Error(), tc.wantText)) {
			t.Errorf("%q: RequireHost = %v, want ErrInvalidOption containing %q", tc.url, herr, tc.wantText)
		}
		if herr != nil && strings.Contains(herr.Error(), "pw") {
			t.Errorf("%q: RequireHost = %v shows the password", tc.url, herr)
		}
	}
}

// TestRedactError: whatever a client library quotes, the texts that could
// be the password are replaced, and errors.Is still sees the cause.
func TestRedactError(t *testing.T) {
	cause := errors.New("cause")
	tests := []struct{ url, msg string }{
		{"redis://app:s3cret@h/0", "dial app:s3cret@h"},
		{"redis://app:s3%2Fcret@h/0", "bad password s3/cret"},
		{"redis://app:s3%2Fcret@h/0", "bad password s3%2Fcret"},
		{"redis:app:s3cret@h/0", "opaque app:s3cret@h/0"},
		{"redis//app:s3cret@h/0", "path redis//app:s3cret@h/0"},
		{"postgres://h/db?password=s3cret&sslmode=x", "password=s3cret sslmode=x"},
		{"postgres://h/db?sslpassword=s3c%20ret", "key s3c ret"},
	}
	for _, tc := range tests {
		err := RedactError(fmt.Errorf("%w: %s", cause, tc.msg), tc.url)
		if strings.Contains(err.Error(), "s3") || !errors.Is(err, cause) {
			t.Errorf("RedactError(%q, %q) = %q, want the password gone and the cause kept", tc.msg, tc.url, err)
		}
		if u, perr := ParseURL(tc.url); perr == nil {
			err := u.RedactError(fmt.Errorf("%w: %s", cause, tc.msg))
			if strings.Contains(err.Error(), "s3") || !errors.Is(err, cause) {
				t.Errorf("URL(%q).RedactError(%q) = %q, want the password gone and the cause kept", tc.url, tc.msg, err)
			}
		}
	}
	if err := RedactError(cause, "redis://h/0"); err != cause {
		t.Errorf("RedactError without a password = %v, want the error itself", err)
	}
}
