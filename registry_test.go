package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
)

func TestOpenErrors(t *testing.T) {
	ctx := t.Context()
	tests := []struct {
		url      string
		want     error
		contains string
	}{
		{"nosuch://host/x", dlock.ErrInvalidOption, "registered: "},
		{"mem://?bogus=1", dlock.ErrInvalidOption, "bogus"},
		{"mem:///path", dlock.ErrInvalidOption, "mem://NAME"},
		{"no-scheme", dlock.ErrInvalidOption, "no scheme"},
		{"mem://x?bogus=1&bogus=2", dlock.ErrInvalidOption, "bogus"},
	}
	for _, tc := range tests {
		_, err := dlock.Open(ctx, tc.url)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("Open(%q) = %v, want %v containing %q", tc.url, err, tc.want, tc.contains)
		}
	}
	_, err := dlock.Open(ctx, "nosuch://user:s3cret@host/")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open error %q leaks the password", err)
	}
	if !strings.Contains(err.Error(), "mem") {
		t.Errorf("unknown-scheme error %q does not list the registered mem scheme", err)
	}
}

// OpenWith hands the parsed URL to the given opener, whatever its scheme,
// keeps passwords out of the opener's errors, and refuses a nil opener.
func TestOpenWith(t *testing.T) {
	ctx := t.Context()
	store := memdlock.NewStore()
	var got *driver.URL
	opener := driver.URLOpenerFunc(func(_ context.Context, u *driver.URL) (driver.Locker, error) {
		got = u
		if u.Has("fail") {
			return nil, fmt.Errorf("%w: cannot reach %s", dlock.ErrUnavailable, u.URL.String())
		}
		return store.Driver(), nil
	})
	c, err := dlock.OpenWith(ctx, opener, "custom://app:s3cret@host:1/x")
	if err != nil {
		t.Fatalf("OpenWith: %v", err)
	}
	defer c.Close()
	if got == nil || got.Scheme != "custom" || got.Host != "host:1" {
		t.Fatalf("opener got %v, want the parsed custom://host:1/x", got)
	}
	if _, err := c.TryLock(ctx, "k"); err != nil {
		t.Fatalf("TryLock on the opener's driver: %v", err)
	}
	if in, err := store.NewClient().Inspect(ctx, "k"); err != nil || !in.Held {
		t.Errorf("the lock is not in the opener's store: %+v, %v", in, err)
	}
	_, err = dlock.OpenWith(ctx, opener, "custom://app:s3cret@host:1/x?fail=1")
	if !errors.Is(err, dlock.ErrUnavailable) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("OpenWith error = %v, want ErrUnavailable without the password", err)
	}
	for _, o := range []driver.URLOpener{nil, (*nilOpener)(nil)} {
		if _, err := dlock.OpenWith(ctx, o, "mem://x"); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("OpenWith(%T(nil)) = %v, want ErrInvalidOption", o, err)
		}
	}
	if _, err := dlock.OpenWith(ctx, opener, "no-scheme"); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("OpenWith of a URL without scheme = %v, want ErrInvalidOption", err)
	}
}

type nilOpener struct{}

func (*nilOpener) OpenLockerURL(context.Context, *driver.URL) (driver.Locker, error) {
	panic("called on a nil opener")
}

func TestOpenSharedStore(t *testing.T) {
	ctx := t.Context()
	a, err := dlock.Open(ctx, "mem://shared-test")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := dlock.Open(ctx, "mem://shared-test")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l, err := a.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("second client on the same mem store: TryLock = %v, want ErrNotAcquired", err)
	}
	_ = l.Unlock(ctx)
}
