package sqllease

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/dlock-go/dlock/driver"
)

// Closing is a driver's closed state, for embedding in the driver: Check
// refuses calls once CloseOnce has begun, and CloseOnce runs the driver's
// teardown once. The zero value is open.
type Closing struct {
	closed atomic.Bool
	once   sync.Once
	err    error
}

// Check returns driver.ErrClosed once CloseOnce has been called, else
// ctx.Err().
func (c *Closing) Check(ctx context.Context) error {
	if c.closed.Load() {
		return driver.ErrClosed
	}
	return ctx.Err()
}

// Closed reports whether CloseOnce has been called.
func (c *Closing) Closed() bool { return c.closed.Load() }

// CloseOnce, on its first call, marks the driver closed (so that Check
// and Closed report it from then on) and then runs teardown. Every call
// returns teardown's error, after teardown has returned.
func (c *Closing) CloseOnce(teardown func() error) error {
	c.once.Do(func() {
		c.closed.Store(true)
		c.err = teardown()
	})
	return c.err
}
