package pgdlock

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/sqllease"
)

// Listener timings. The listening connection pings the server whenever it
// has heard nothing for listenPoll, so a connection that died silently is
// replaced; it closes after listenLinger without watchers. (Variables so
// that tests can shorten them.)
var (
	listenPoll   = 5 * time.Second
	listenLinger = 15 * time.Second
)

const (
	connectTimeout = 10 * time.Second
	readyWait      = 2 * time.Second
	maxBackoff     = 2 * time.Second
)

// errIdle ends a listening session that has had no watchers for a while.
var errIdle = errors.New("pgdlock: listener idle")

// listener keeps one LISTEN connection per driver, shared by all of its
// waiters, and fans each notification out to the waiters of that key. It
// connects on the first watch, reconnects with backoff when the connection
// drops (then wakes every waiter, since releases may have been missed), and
// disconnects after a while without waiters.
type listener struct {
	q       querier
	channel string
	hub     sqllease.Hub

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	running bool
	ready   chan struct{} // closed while LISTEN is in effect
	isReady bool

	sessions atomic.Int64 // LISTEN sessions started, for tests

	// grants: the name of a queued share that waits here → the fence a
	// release granted it with (0 until one comes). See expectGrant.
	grantsMu sync.Mutex
	grants   map[string]uint64
}

// expectGrant registers the name of a queued share that waits on this
// listener, so that a notification granting it (payload "w:name:fence")
// is kept for granted. The returned function removes it.
func (l *listener) expectGrant(name string) func() {
	l.grantsMu.Lock()
	if l.grants == nil {
		l.grants = make(map[string]uint64)
	}
	l.grants[name] = 0
	l.grantsMu.Unlock()
	return func() {
		l.grantsMu.Lock()
		delete(l.grants, name)
		l.grantsMu.Unlock()
	}
}

// granted returns the fence of the grant a release notified to the queued
// share name, if one came.
func (l *listener) granted(name string) (uint64, bool) {
	l.grantsMu.Lock()
	defer l.grantsMu.Unlock()
	f := l.grants[name]
	return f, f > 0
}

// deliver wakes the watchers of a notification's payload. A grant to a
// queued share ("w:name:fence") is kept for its waiter, which is woken by
// its own topic, "w:name".
func (l *listener) deliver(payload string) {
	if rest, ok := strings.CutPrefix(payload, "w:"); ok {
		if name, fence, ok := strings.Cut(rest, ":"); ok {
			if f, err := strconv.ParseUint(fence, 10, 64); err == nil && f > 0 {
				l.grantsMu.Lock()
				if _, waits := l.grants[name]; waits {
					l.grants[name] = f
				}
				l.grantsMu.Unlock()
			}
			payload = "w:" + name
		}
	}
	l.hub.Notify(payload)
}

// isRunning reports whether the listening goroutine runs, for tests.
func (l *listener) isRunning() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running
}

func newListener(q querier, channel string) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &listener{q: q, channel: channel, ctx: ctx, cancel: cancel, ready: make(chan struct{})}
}

// watch registers a waiter for topic and makes sure the listening
// connection runs. It waits (briefly, bounded by ctx) until LISTEN is in
// effect, so that a release after it returns is not missed.
func (l *listener) watch(ctx context.Context, topic string) (<-chan struct{}, func(), error) {
	ch, stop := l.hub.Watch(topic)
	ready, err := l.ensure()
	if err != nil {
		stop()
		return nil, nil, err
	}
	t := time.NewTimer(readyWait)
	defer t.Stop()
	select {
	case <-ready:
	case <-ctx.Done():
	case <-l.ctx.Done():
	case <-t.C:
	}
	return ch, stop, nil
}

func (l *listener) ensure() (<-chan struct{}, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		return nil, driver.ErrClosed
	}
	if !l.running {
		l.running = true
		l.wg.Add(1)
		go l.run()
	}
	return l.ready, nil
}

func (l *listener) close() {
	l.cancel()
	l.wg.Wait()
}

func (l *listener) run() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		started := l.sessions.Load()
		err := l.q.listen(l.ctx, connectTimeout, l.session)
		if errors.Is(err, errIdle) {
			return // stopIfNoWatchers has already marked it stopped
		}
		l.setReady(false)
		if l.ctx.Err() != nil {
			return
		}
		if l.sessions.Load() != started {
			backoff = 0 // the session had started: reconnect soon
		}
		backoff = min(max(2*backoff, 50*time.Millisecond), maxBackoff)
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(backoff):
		}
		if l.stopIfNoWatchers() {
			return
		}
	}
}

// session LISTENs on c and dispatches notifications until the connection
// fails, the driver closes, or no waiter is left for listenLinger.
func (l *listener) session(c *pgx.Conn) error {
	if _, err := c.Exec(l.ctx, `LISTEN "`+l.channel+`"`); err != nil {
		return err
	}
	l.sessions.Add(1)
	l.setReady(true)
	// Releases may have been missed before LISTEN took effect.
	l.hub.NotifyAll()
	var idleSince time.Time
	for {
		wctx, cancel := context.WithTimeout(l.ctx, listenPoll)
		n, err := c.WaitForNotification(wctx)
		timedOut := wctx.Err() != nil
		cancel()
		switch {
		case err == nil:
			l.deliver(n.Payload)
			continue
		case l.ctx.Err() != nil:
			return l.ctx.Err()
		case !timedOut:
			return err
		}
		// Quiet for a while: check the connection, and leave when idle.
		pctx, cancel := context.WithTimeout(l.ctx, connectTimeout)
		err = c.Ping(pctx)
		cancel()
		if err != nil {
			return err
		}
		if l.hub.Len() > 0 {
			idleSince = time.Time{}
			continue
		}
		if idleSince.IsZero() {
			idleSince = time.Now()
		} else if time.Since(idleSince) >= listenLinger && l.stopIfNoWatchers() {
			return errIdle
		}
	}
}

// stopIfNoWatchers marks the listener stopped (and not ready) when nobody
// watches; a later watch starts it again. The caller must then return
// without touching the ready state, which a new run may already own.
func (l *listener) stopIfNoWatchers() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hub.Len() > 0 {
		return false
	}
	l.running = false
	if l.isReady {
		l.isReady = false
		l.ready = make(chan struct{})
	}
	return true
}

func (l *listener) setReady(ready bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ready == l.isReady {
		return
	}
	l.isReady = ready
	if ready {
		close(l.ready)
	} else {
		l.ready = make(chan struct{})
	}
}
