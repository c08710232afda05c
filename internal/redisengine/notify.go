package redisengine

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
)

const (
	// subscribeWait bounds how long a new watch waits for the server to
	// confirm its subscription. The watch works without the confirmation;
	// waiting only closes the gap in which a release could go unseen.
	subscribeWait = time.Second
	// linger keeps a channel subscribed this long after its last watcher
	// left, so that a process locking the same key again and again does not
	// subscribe and unsubscribe each time.
	linger = 2 * time.Second
	// syncTimeout bounds a background SUBSCRIBE or UNSUBSCRIBE write, and
	// a background queue update.
	syncTimeout = 5 * time.Second
	// closeWait bounds how long Close waits for the replies of attempts
	// that may have joined a queue, and closeLeave how long Close spends
	// on them and on leaving the queues the client may be in.
	closeWait  = time.Second
	closeLeave = 2 * time.Second
)

// notifier shares one pub/sub connection among every watch of a driver. It
// subscribes to a key's release channel when the first watcher of that key
// arrives, fans each message out to the key's watchers, and unsubscribes a
// while after the last one leaves. go-redis reconnects the connection and
// subscribes again after a failure; watchers are woken then, since a release
// may have been missed meanwhile. Lost messages only delay a waiter until
// its backoff or the holder's TTL, which the portable layer bounds.
type notifier struct {
	e   *Engine
	sem chan struct{} // serializes SUBSCRIBE/UNSUBSCRIBE writes, in order

	mu       sync.Mutex
	ps       *redis.PubSub
	chans    map[string]*watched
	dirty    map[string]struct{} // channels whose subscription may need changing
	janitor  *time.Timer
	keeper   *time.Timer // renews queue entries while the client waits
	closed   bool
	loopDone chan struct{}

	// queues holds the keys in whose queues the client may be, each with
	// when it last may have joined or renewed its entry there: added when
	// an attempt that joins is sent, removed once the client is known to
	// be out (a grant, a leave that the server confirmed). Close leaves
	// every queue still listed whose entry may be alive.
	queues map[string]time.Time
	// joining counts attempts that may join a queue whose reply has not
	// come yet; settled, when not nil, is closed when it drops to zero.
	joining int
	settled chan struct{}
}

type watched struct {
	key        string // the lock's name
	waiters    map[chan struct{}]struct{}
	queued     bool          // the driver's last attempt on the key left it in the key's queue
	joined     time.Time     // when that attempt was sent
	wakes      uint64        // wake-ups so far (releases that may be for this client, reconnects)
	joinWakes  uint64        // wakes when the last queued attempt was sent
	subscribed bool          // a SUBSCRIBE was sent and no UNSUBSCRIBE since
	pending    int           // SUBSCRIBEs sent whose confirmation has not come
	confirmed  bool          // the server confirmed the current subscription
	ready      chan struct{} // closed when confirmed
	idleSince  time.Time     // when the last watcher left
	inflight   int           // attempts that may join the queue, whose reply has not come
	leaveDue   bool          // leave the queue once the attempts in flight have replied
}

func newNotifier(e *Engine) *notifier {
	return &notifier{
		e:      e,
		sem:    make(chan struct{}, 1),
		chans:  map[string]*watched{},
		dirty:  map[string]struct{}{},
		queues: map[string]time.Time{},
	}
}

// watch registers a watcher of key's release channel and makes sure it is
// subscribed.
func (n *notifier) watch(ctx context.Context, key, channel string) (<-chan struct{}, func(), error) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, nil, driver.ErrClosed
	}
	if n.ps == nil {
		n.ps = n.e.rdb.Subscribe(context.WithoutCancel(ctx))
		n.loopDone = make(chan struct{})
		go n.loop(n.ps.ChannelWithSubscriptions(redis.WithChannelSize(256)), n.loopDone)
	}
	w := n.chans[channel]
	if w == nil {
		w = &watched{key: key, waiters: map[chan struct{}]struct{}{}, ready: make(chan struct{})}
		n.chans[channel] = w
	}
	w.waiters[ch] = struct{}{}
	if w.queued && w.wakes != w.joinWakes {
		// A release came after the client's queued attempt was sent,
		// perhaps before any watcher was there to hear it.
		ch <- struct{}{}
	}
	needSync := !w.subscribed
	if needSync {
		n.dirty[channel] = struct{}{}
	}
	ready := w.ready
	n.mu.Unlock()

	var once sync.Once
	stop := func() { once.Do(func() { n.unwatch(channel, ch) }) }
	if needSync {
		if err := n.sync(ctx); err != nil {
			stop()
			return nil, nil, n.e.unavailable(ctx, err)
		}
	}
	t := time.NewTimer(subscribeWait)
	defer t.Stop()
	select {
	case <-ready:
	case <-t.C:
	case <-ctx.Done():
		stop()
		return nil, nil, ctx.Err()
	}
	return ch, stop, nil
}

func (n *notifier) unwatch(channel string, ch chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.chans[channel]
	if w == nil {
		return
	}
	delete(w.waiters, ch)
	if len(w.waiters) > 0 || n.closed {
		return
	}
	if w.queued || w.inflight > 0 {
		// The last waiter gave up while the client is (or may be about
		// to be) in the key's queue: leave it, so that the key is not
		// kept for this client.
		n.leaveLocked(w)
	}
	w.idleSince = time.Now()
	n.dirty[channel] = struct{}{}
	if n.janitor == nil {
		n.janitor = time.AfterFunc(linger, n.sweep)
	}
}

// sweep unsubscribes channels idle for linger, from the janitor timer.
func (n *notifier) sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	_ = n.sync(ctx)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.janitor = nil
	if n.closed {
		return
	}
	for name := range n.dirty {
		if w := n.chans[name]; w != nil && len(w.waiters) == 0 {
			n.janitor = time.AfterFunc(linger, n.sweep)
			return
		}
	}
}

// sync sends the SUBSCRIBE and UNSUBSCRIBE commands that bring the
// connection's subscriptions in line with the watchers, in one batch each.
func (n *notifier) sync(ctx context.Context) error {
	select {
	case n.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-n.sem }()

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return driver.ErrClosed
	}
	now := time.Now()
	var sub, unsub []string
	for name := range n.dirty {
		w := n.chans[name]
		switch {
		case w == nil:
			delete(n.dirty, name)
		case len(w.waiters) > 0:
			delete(n.dirty, name)
			if !w.subscribed {
				w.subscribed = true
				w.pending++
				sub = append(sub, name)
			}
		case now.Sub(w.idleSince) < linger:
			// Still lingering; the janitor comes back for it.
		case w.subscribed:
			delete(n.dirty, name)
			w.subscribed, w.confirmed = false, false
			w.ready = make(chan struct{})
			unsub = append(unsub, name)
			if w.pending == 0 {
				delete(n.chans, name)
			}
		default:
			delete(n.dirty, name)
			if w.pending == 0 {
				delete(n.chans, name)
			}
		}
	}
	ps := n.ps
	n.mu.Unlock()

	var err error
	if len(unsub) > 0 {
		err = ps.Unsubscribe(ctx, unsub...)
	}
	if len(sub) > 0 {
		// On error go-redis still records the channels and subscribes
		// them again when it reconnects.
		if serr := ps.Subscribe(ctx, sub...); serr != nil {
			err = serr
		}
	}
	return err
}

// loop fans messages out to watchers until the pub/sub is closed.
func (n *notifier) loop(msgs <-chan any, done chan struct{}) {
	defer close(done)
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Message:
			n.mu.Lock()
			if w := n.chans[m.Channel]; w != nil && (m.Payload == "" || named(m.Payload, n.e.id) || !w.inQueue()) {
				w.wake()
			}
			n.mu.Unlock()
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			n.mu.Lock()
			w := n.chans[m.Channel]
			switch {
			case w == nil:
			case w.pending > 0:
				w.pending--
				if w.pending == 0 && w.subscribed && !w.confirmed {
					w.confirmed = true
					close(w.ready)
				}
				if w.pending == 0 && !w.subscribed && len(w.waiters) == 0 {
					delete(n.chans, m.Channel)
				}
			default:
				// A subscription renewed after a reconnect: releases
				// may have been missed while the connection was down.
				w.wake()
			}
			n.mu.Unlock()
		}
	}
}

// inQueue reports whether the client is, or may be about to be, in the
// key's waiting queue, as an exclusive or a shared waiter. A release that
// names other clients only (the first in the queue, or the shared waiters
// it frees permits for) is not for it: the queue lets those through. A
// watcher not in the queue (a Redlock shared waiter, which never joins) is
// woken by every release, since a release may let it in whoever is named.
// n.mu must be held.
func (w *watched) inQueue() bool { return w.queued || w.inflight > 0 }

// named reports whether a release announcement (client ids separated by
// spaces, see lua/queue.lua) names the client id. Ids are of one length
// and hex, so a substring match is a match of a whole id.
func named(payload, id string) bool { return strings.Contains(payload, id) }

// wake signals every watcher, without blocking. n.mu must be held.
func (w *watched) wake() {
	w.wakes++
	for ch := range w.waiters {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// close leaves every queue the client may be in, then closes the pub/sub
// connection. It first waits, up to closeWait, for the replies of attempts
// that may join a queue; the leaving is one pipeline (one round trip per
// server), and the whole is bounded by closeLeave, whether or not the
// server answers.
func (n *notifier) close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	if n.janitor != nil {
		n.janitor.Stop()
	}
	if n.keeper != nil {
		n.keeper.Stop()
	}
	var settled chan struct{}
	if n.joining > 0 {
		n.settled = make(chan struct{})
		settled = n.settled
	}
	n.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), closeLeave)
	defer cancel()
	if settled != nil {
		t := time.NewTimer(closeWait)
		select {
		case <-settled:
		case <-t.C:
		}
		t.Stop()
	}
	n.mu.Lock()
	var keys []string
	now := time.Now()
	for key, at := range n.queues {
		// An entry lives queueEntryTTL from when the server ran the
		// attempt or renewal, which may be a while after it was sent.
		if now.Sub(at) < queueEntryTTL+closeLeave {
			keys = append(keys, key)
		}
	}
	clear(n.queues)
	ps, done := n.ps, n.loopDone
	n.mu.Unlock()
	if len(keys) > 0 {
		n.e.leaveQueues(ctx, keys)
	}
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	return err
}

// Wakes returns how many wake-ups (release announcements that may be for
// this engine, and reconnects) the engine's subscription to key's releases
// has had; 0 when it is not subscribed. Tests wait on it for
// announcements to arrive.
func (e *Engine) Wakes(key string) uint64 {
	n := e.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.chans[e.ks.channel(key)]; w != nil {
		return w.wakes
	}
	return 0
}
