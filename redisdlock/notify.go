package redisdlock

import (
	"context"
	"strconv"
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
	// queueEntryTTL is how long a client's entry in a key's waiting queue
	// lives after its last attempt or renewal: a waiter that went away
	// (crashed) keeps a free key from the others at most this long.
	// queueKeepEvery is how often a waiting client renews it.
	queueEntryTTL  = 3 * time.Second
	queueKeepEvery = queueEntryTTL / 3
)

var queueEntryTTLms = strconv.FormatInt(queueEntryTTL.Milliseconds(), 10)

// notifier shares one pub/sub connection among every watch of a driver. It
// subscribes to a key's release channel when the first watcher of that key
// arrives, fans each message out to the key's watchers, and unsubscribes a
// while after the last one leaves. go-redis reconnects the connection and
// subscribes again after a failure; watchers are woken then, since a release
// may have been missed meanwhile. Lost messages only delay a waiter until
// its backoff or the holder's TTL, which the portable layer bounds.
type notifier struct {
	d   *Driver
	sem chan struct{} // serializes SUBSCRIBE/UNSUBSCRIBE writes, in order

	mu       sync.Mutex
	ps       *redis.PubSub
	chans    map[string]*watched
	dirty    map[string]struct{} // channels whose subscription may need changing
	janitor  *time.Timer
	keeper   *time.Timer // renews queue entries while the client waits
	closed   bool
	loopDone chan struct{}
}

type watched struct {
	key        string // the lock's name
	waiters    map[chan struct{}]struct{}
	queued     bool          // the driver's last attempt on the key left it in the key's queue
	joined     time.Time     // when that attempt was sent
	subscribed bool          // a SUBSCRIBE was sent and no UNSUBSCRIBE since
	pending    int           // SUBSCRIBEs sent whose confirmation has not come
	confirmed  bool          // the server confirmed the current subscription
	ready      chan struct{} // closed when confirmed
	idleSince  time.Time     // when the last watcher left
}

func newNotifier(d *Driver) *notifier {
	return &notifier{
		d:     d,
		sem:   make(chan struct{}, 1),
		chans: map[string]*watched{},
		dirty: map[string]struct{}{},
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
		n.ps = n.d.rdb.Subscribe(context.WithoutCancel(ctx))
		n.loopDone = make(chan struct{})
		go n.loop(n.ps.ChannelWithSubscriptions(redis.WithChannelSize(256)), n.loopDone)
	}
	w := n.chans[channel]
	if w == nil {
		w = &watched{key: key, waiters: map[chan struct{}]struct{}{}, ready: make(chan struct{})}
		n.chans[channel] = w
	}
	w.waiters[ch] = struct{}{}
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
			return nil, nil, n.d.unavailable(err)
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
	if w.queued {
		// The last waiter gave up while the client is in the key's queue:
		// leave it, so that the key is not kept for this client.
		w.queued = false
		go n.leave(w.key, channel)
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
			if m.Payload != "" && m.Payload != n.d.id {
				// The release is for another client, first in the queue.
				continue
			}
			n.mu.Lock()
			if w := n.chans[m.Channel]; w != nil {
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

// waiting returns the watch of channel when it has watchers (the client
// waits for the key), else nil.
func (n *notifier) waiting(channel string) *watched {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.chans[channel]; w != nil && len(w.waiters) > 0 {
		return w
	}
	return nil
}

// setQueued records whether the client is in the queue of w's key after an
// attempt, and keeps its entry alive while it stays there.
func (n *notifier) setQueued(w *watched, queued bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if queued && len(w.waiters) == 0 && !n.closed {
		// The last waiter left while the attempt was on its way.
		go n.leave(w.key, n.d.ks.channel(w.key))
		queued = false
	}
	w.queued = queued && !n.closed
	if w.queued {
		w.joined = time.Now()
		if n.keeper == nil {
			n.keeper = time.AfterFunc(queueKeepEvery, n.keepQueued)
		}
	}
}

// keepQueued renews the queue entries of keys the client has waited for
// longer than queueKeepEvery without an attempt, so that a waiter with a
// long backoff keeps its place. It runs from the keeper timer while some
// key is queued.
func (n *notifier) keepQueued() {
	n.mu.Lock()
	var keys []string
	now := time.Now()
	for _, w := range n.chans {
		if w.queued && len(w.waiters) > 0 && now.Sub(w.joined) >= queueKeepEvery {
			keys = append(keys, w.key)
			w.joined = now
		}
	}
	n.mu.Unlock()
	if len(keys) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
		n.d.stayQueued(ctx, keys)
		cancel()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.keeper = nil
	if n.closed {
		return
	}
	for _, w := range n.chans {
		if w.queued && len(w.waiters) > 0 {
			n.keeper = time.AfterFunc(queueKeepEvery, n.keepQueued)
			return
		}
	}
}

// leave takes the client out of key's queue, in the background.
func (n *notifier) leave(key, channel string) {
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	all := n.d.ks.allKeys(key)
	_, _ = n.d.run(ctx, leaveScript, []string{all[0], all[3], all[4]}, []any{n.d.id, channel}, nil)
}

// wake signals every watcher, without blocking. n.mu must be held.
func (w *watched) wake() {
	for ch := range w.waiters {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

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
	ps, done := n.ps, n.loopDone
	n.mu.Unlock()
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	return err
}
