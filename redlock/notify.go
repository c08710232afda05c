package redlock

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// watchWait bounds how long WatchReleases waits for the nodes' watches
// before it returns with those that are ready (a majority is enough);
// slower ones join the watch when they are ready.
const watchWait = 1500 * time.Millisecond

// releaseGrace is how long a watch waits, after a node's release message,
// for the messages of a majority of nodes before it wakes the waiter anyway.
const releaseGrace = 5 * time.Millisecond

// watch fans the release notifications of every node in to one channel. A
// release publishes on every node that freed the key, at about the same
// time; a waiter woken by the first message would try while the key is
// still held on other nodes, split the vote with its rivals and give back.
// So the watch wakes the waiter when a majority of nodes have announced the
// release, or releaseGrace after the first announcement.
type watch struct {
	out  chan struct{}
	in   chan struct{}
	done chan struct{}

	mu      sync.Mutex
	stopped bool
	stops   []func()
}

// add joins a node's watch to w, or stops it when w has stopped.
func (w *watch) add(ch <-chan struct{}, stop func()) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		stop()
		return
	}
	w.stops = append(w.stops, stop)
	w.mu.Unlock()
	go func() {
		for {
			select {
			case <-ch:
				select {
				case w.in <- struct{}{}:
				case <-w.done:
					return
				}
			case <-w.done:
				return
			}
		}
	}()
}

// gather wakes the waiter once quorum release messages came in, or
// releaseGrace after the first one.
func (w *watch) gather(quorum int) {
	var (
		count int
		grace *time.Timer
		fire  <-chan time.Time
	)
	wake := func() {
		count, fire = 0, nil
		if grace != nil {
			grace.Stop()
		}
		select {
		case w.out <- struct{}{}:
		default:
		}
	}
	for {
		select {
		case <-w.in:
			if count++; count == 1 {
				grace = time.NewTimer(releaseGrace)
				fire = grace.C
			}
			if count >= quorum {
				wake()
			}
		case <-fire:
			wake()
		case <-w.done:
			if grace != nil {
				grace.Stop()
			}
			return
		}
	}
}

func (w *watch) stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	close(w.done)
	stops := w.stops
	w.stops = nil
	w.mu.Unlock()
	for _, s := range stops {
		s()
	}
}

// WatchReleases implements driver.Notifier. It watches key on every node,
// each over that node's one pub/sub connection (shared by every watch of
// the driver), and fans the release messages in to one channel. A release
// publishes on every node that freed the key, so a waiter hears it from any
// node whose subscription is up; nodes that are down only narrow the
// choice. When no node can be watched it returns an error, and the waiter
// polls.
func (d *locker) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if d.closed.Load() {
		return nil, nil, driver.ErrClosed
	}
	w := &watch{out: make(chan struct{}, 1), in: make(chan struct{}), done: make(chan struct{})}
	go w.gather(d.quorum)
	type result struct {
		ch   <-chan struct{}
		stop func()
		err  error
	}
	results := make(chan result, len(d.nodes))
	for _, n := range d.nodes {
		go func() {
			ch, stop, err := n.WatchReleases(ctx, key)
			results <- result{ch, stop, err}
		}()
	}
	timer := time.NewTimer(watchWait)
	defer timer.Stop()
	var (
		ready   int
		pending = len(d.nodes)
		errs    []string
	)
	lateJoin := func() {
		// Watches that come after WatchReleases returned join (or are
		// stopped, if the watch has ended meanwhile).
		go func(pending int) {
			for ; pending > 0; pending-- {
				if r := <-results; r.err == nil {
					w.add(r.ch, r.stop)
				}
			}
		}(pending)
	}
	for pending > 0 && ready < d.quorum {
		select {
		case r := <-results:
			pending--
			if r.err != nil {
				errs = append(errs, nodeError(r.err))
				continue
			}
			ready++
			w.add(r.ch, r.stop)
		case <-timer.C:
			if ready > 0 {
				lateJoin()
				return w.out, w.stop, nil
			}
			// Nothing yet: wait for the first node or the caller.
			timer.Reset(time.Hour)
		case <-ctx.Done():
			w.stop()
			lateJoin()
			return nil, nil, ctx.Err()
		}
	}
	if ready == 0 {
		w.stop()
		return nil, nil, fmt.Errorf("%w: redlock: no node's release notifications: %s", driver.ErrUnavailable, strings.Join(errs, "; "))
	}
	lateJoin()
	return w.out, w.stop, nil
}
