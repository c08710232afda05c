package redlock

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

// reply is one node's answer to a fanned-out call.
type reply[T any] struct {
	node int
	val  T
	err  error
}

// fanout runs one call on every node in parallel. Each call has its own
// context, which ends after the node timeout but not with the caller's: a
// call under way completes even when the caller stops listening (a release
// reaches every node it can).
type fanout[T any] struct {
	replies chan reply[T]
	done    []chan struct{} // done[i] is closed when node i's call returned
	pending int
	nodes   []*redisengine.Engine
	heard   []bool // heard[i]: node i's reply was collected
}

func startFanout[T any](ctx context.Context, nodes []*redisengine.Engine, timeout time.Duration, call func(context.Context, *redisengine.Engine) (T, error)) *fanout[T] {
	f := &fanout[T]{replies: make(chan reply[T], len(nodes)), done: make([]chan struct{}, len(nodes)), pending: len(nodes),
		nodes: nodes, heard: make([]bool, len(nodes))}
	base := context.WithoutCancel(ctx)
	for i, n := range nodes {
		f.done[i] = make(chan struct{})
		go func() {
			nctx, cancel := context.WithTimeout(base, timeout)
			defer cancel()
			v, err := call(nctx, n)
			close(f.done[i])
			f.replies <- reply[T]{node: i, val: v, err: err}
		}()
	}
	return f
}

// collect passes replies to take as they arrive, until take returns true
// (the outcome is decided), every node has replied, or ctx ends, in which
// case it returns an error wrapping ctx.Err() that names the nodes not
// heard from.
func (f *fanout[T]) collect(ctx context.Context, take func(reply[T]) bool) error {
	for f.pending > 0 {
		select {
		case r := <-f.replies:
			f.pending--
			f.heard[r.node] = true
			if take(r) {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("%w (no answer from %s)", ctx.Err(), strings.Join(f.unheard(), ", "))
		}
	}
	return nil
}

// unheard returns the addresses of the nodes whose reply was not collected.
func (f *fanout[T]) unheard() []string { return notHeard(f.nodes, f.heard) }

// notHeard returns the addresses of the nodes i for which heard[i] is false.
func notHeard(nodes []*redisengine.Engine, heard []bool) []string {
	var out []string
	for i, h := range heard {
		if !h {
			out = append(out, nodes[i].Addr())
		}
	}
	return out
}

// tally counts the nodes' answers to one operation.
type tally struct {
	n, quorum int
	ok        int      // the operation took effect
	refused   int      // the node answered no: held by another owner, or not ours
	failed    []string // nodes that did not answer, with why
}

func (t *tally) fail(err error) {
	t.failed = append(t.failed, nodeError(err))
}

// decided reports whether the outcome is known: a majority said yes, a
// majority said no (not ours), or the answers still to come can make
// neither. (A majority that cannot say yes may still say no: with nodes
// down, the live ones' "not ours" must all be heard, or another owner's
// Refresh would look like unavailability instead of ErrNotHeld.)
func (t *tally) decided() bool {
	if t.ok >= t.quorum || t.refused > t.n-t.quorum {
		return true
	}
	pending := t.n - t.ok - t.refused - len(t.failed)
	return t.ok+pending < t.quorum && t.refused+pending <= t.n-t.quorum
}

// unavailable returns the error for an operation that did not reach a
// quorum of nodes able to answer; unheard are the nodes whose answers were
// not waited for.
func (t *tally) unavailable(op string, unheard []string) error {
	var parts []string
	if len(t.failed) > 0 {
		parts = append(parts, fmt.Sprintf("%d failed: %s", len(t.failed), strings.Join(t.failed, "; ")))
	}
	if len(unheard) > 0 {
		parts = append(parts, "not heard: "+strings.Join(unheard, ", "))
	}
	msg := strings.Join(parts, "; ")
	return fmt.Errorf("%w: redlock: %s: quorum of %d of %d nodes not reached (%s)",
		driver.ErrUnavailable, op, t.quorum, t.n, msg)
}

// nodeError returns a node's error as text, without the repeated sentinel
// prefix. The text is kept apart from the error chain on purpose: a node's
// own timeout must not look like the caller's context ending.
func nodeError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, driver.ErrUnavailable.Error()+": ")
	return s
}
