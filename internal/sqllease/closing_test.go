package sqllease

import (
	"context"
	"errors"
	"testing"

	"github.com/dlock-go/dlock/driver"
)

func TestClosing(t *testing.T) {
	var c Closing
	ctx, cancel := context.WithCancel(t.Context())
	if err := c.Check(ctx); err != nil || c.Closed() {
		t.Fatalf("open: Check = %v, Closed = %v, want nil, false", err, c.Closed())
	}
	cancel()
	if err := c.Check(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Check with an ended context = %v, want context.Canceled", err)
	}
	boom := errors.New("boom")
	runs := 0
	teardown := func() error {
		runs++
		if !c.Closed() || !errors.Is(c.Check(t.Context()), driver.ErrClosed) {
			t.Error("teardown runs before the driver is marked closed")
		}
		return boom
	}
	for range 2 {
		if err := c.CloseOnce(teardown); err != boom {
			t.Errorf("CloseOnce = %v, want teardown's error", err)
		}
	}
	if runs != 1 {
		t.Errorf("teardown ran %d times, want once", runs)
	}
	if err := c.Check(t.Context()); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Check after CloseOnce = %v, want ErrClosed", err)
	}
}
