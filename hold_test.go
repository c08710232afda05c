package dlock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/memdlock"
)

// TestHoldOptionsInvalid: holds that cannot be kept are refused with
// ErrInvalidOption before anything is tried. (MinHold and MaxHold behaviour
// is in the conformance suite.)
func TestHoldOptionsInvalid(t *testing.T) {
	c := memdlock.NewClient()
	defer c.Close()
	for name, opts := range map[string][]dlock.LockOption{
		"negative min":     {dlock.WithMinHold(-time.Second)},
		"negative max":     {dlock.WithMaxHold(-time.Second)},
		"min above max":    {dlock.WithMinHold(2 * time.Second), dlock.WithMaxHold(time.Second)},
		"min above MaxTTL": {dlock.WithMinHold(c.Capabilities().MaxTTL + time.Second)},
	} {
		if _, err := c.TryLock(t.Context(), "job", opts...); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("%s: TryLock = %v, want ErrInvalidOption", name, err)
		}
	}
	l, err := c.TryLock(t.Context(), "job", dlock.WithMinHold(time.Second), dlock.WithMaxHold(time.Second))
	if err != nil {
		t.Fatalf("equal min and max hold: %v", err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
}
