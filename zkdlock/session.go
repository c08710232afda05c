package zkdlock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

// dialer is the driver-owned connection's dialer: dial (nil:
// net.DialTimeout), reading the session timeout the server grants out of
// each connect response, which the client library does not expose.
func (d *zkDriver) dialer(dial zk.Dialer) zk.Dialer {
	if dial == nil {
		dial = net.DialTimeout
	}
	return func(network, addr string, timeout time.Duration) (net.Conn, error) {
		c, err := dial(network, addr, timeout)
		if err != nil {
			return nil, err
		}
		return &sniffConn{Conn: c, granted: func(ms int32) { d.timeoutMs.Store(int64(ms)) }}, nil
	}
}

// sniffConn watches the first bytes the server sends on a connection: the
// connect response, which starts with its length, the protocol version and
// the granted session timeout in milliseconds (big-endian int32 each). A
// response refusing an expired session carries timeout 0 and is ignored.
type sniffConn struct {
	net.Conn
	hdr     [12]byte
	n       int
	granted func(ms int32)
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.n < len(c.hdr) && n > 0 {
		c.n += copy(c.hdr[c.n:], p[:n])
		if c.n == len(c.hdr) {
			if ms := int32(binary.BigEndian.Uint32(c.hdr[8:12])); ms > 0 {
				c.granted(ms)
			}
		}
	}
	return n, err
}

// call runs one request of the (blocking) client library and returns when it
// answers or ctx ends, whichever is first. A request abandoned on ctx still
// completes in the background; callers that create nodes use create instead,
// which cleans up after itself.
func call[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if ctx.Done() == nil { // cannot end: no need for another goroutine
		return f()
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// transient reports errors after which the request may or may not have been
// applied and a later attempt may succeed: the connection or session, not
// the request, failed.
func transient(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, zk.ErrNoServer), errors.Is(err, zk.ErrConnectionClosed),
		errors.Is(err, zk.ErrClosing), errors.Is(err, zk.ErrSessionExpired),
		errors.Is(err, zk.ErrSessionMoved), errors.Is(err, io.EOF),
		errors.As(err, &ne):
		return true
	}
	return false
}

// wrap turns an error of one request into the driver's error: ErrClosed
// after Close; ctx.Err() (and ErrUnavailable when there is no session) when
// ctx ended; ErrUnavailable naming the servers for connection failures.
func (d *zkDriver) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if d.isClosed() {
		return fmt.Errorf("%w: zookeeper %s: %v", driver.ErrClosed, op, err)
	}
	if cerr := ctx.Err(); cerr != nil {
		if d.conn.State() != zk.StateHasSession {
			return fmt.Errorf("%w: zookeeper %s: %s: no session (%w)", driver.ErrUnavailable, d.servers, op, cerr)
		}
		// The server did not answer in time: name it, as for a failure.
		return fmt.Errorf("zookeeper %s: %s: %w", d.servers, op, cerr)
	}
	if transient(err) {
		return fmt.Errorf("%w: zookeeper %s: %s: %v", driver.ErrUnavailable, d.servers, op, err)
	}
	return fmt.Errorf("zookeeper %s: %w", op, err)
}

// sleepCtx waits d or until ctx ends or the driver closes.
func (d *zkDriver) sleepCtx(ctx context.Context, wait time.Duration) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-d.closeCh:
		return driver.ErrClosed
	}
}
