package driver

import (
	"errors"
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
