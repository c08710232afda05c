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
	// closeWait bounds how long Close waits for the replies of attempts
	// that may have joined a queue, and closeLeave how long Close spends
	// on them and on leaving the queues the client may be in.
	closeWait  = time.Second
	closeLeave = 2 * time.Second
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

func newNotifier(d *Driver) *notifier {
	return &notifier{
		d:      d,
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

// queueAttempt is an attempt's view of the key's release channel: whether
// the attempt joins the key's queue when it fails, and whether its caller
// could be told it is queued (see driver.Queued).
type queueAttempt struct {
	w      *watched // nil: the attempt does not join
	wakes  uint64   // w.wakes when the attempt was sent
	sure   bool     // the subscription was confirmed when the attempt was sent
	expect bool     // the caller, not watching yet, watches next (driver.Hints.Wait)
}

// attempt returns how an attempt on channel deals with the queue. The
// attempt joins when the client waits for the key: some watcher waits, or
// the caller will watch next (wait) and the channel is subscribed already,
// lingering since an earlier wait.
func (n *notifier) attempt(channel string, wait bool) queueAttempt {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.chans[channel]
	if w == nil || n.closed {
		return queueAttempt{}
	}
	sure := w.subscribed && w.confirmed
	if len(w.waiters) == 0 && !(wait && sure) {
		return queueAttempt{}
	}
	w.inflight++
	n.joining++
	now := time.Now()
	n.queues[w.key] = now
	if len(n.queues) > maxQueues {
		n.pruneQueues(now)
	}
	// Only a caller not yet watching is expected to watch next; one whose
	// watch is gone by the reply has left.
	return queueAttempt{w: w, wakes: w.wakes, sure: sure, expect: wait && len(w.waiters) == 0}
}

// maxQueues is how many keys n.queues holds before entries that must have
// run out on the server are dropped.
const maxQueues = 256

// pruneQueues drops from n.queues the keys whose entry must have run out
// on the server: keys the client is no longer waiting for (it left without
// the server confirming it) whose last join or renewal was sent more than
// twice queueEntryTTL ago. n.mu must be held.
func (n *notifier) pruneQueues(now time.Time) {
	for key, at := range n.queues {
		w := n.chans[n.d.ks.channel(key)]
		if now.Sub(at) > 2*queueEntryTTL && (w == nil || !w.queued && w.inflight == 0 && !w.leaveDue) {
			delete(n.queues, key)
		}
	}
}

// replied records that the reply of a joining attempt came (or that the
// attempt was never sent, or failed in transport): from then on a leave
// cannot be overtaken by it. A leave put off while it was in flight starts
// now. It is called exactly once per attempt whose w is not nil, before
// setQueued when the caller still waits for the reply.
func (n *notifier) replied(a queueAttempt) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := a.w
	w.inflight--
	if n.joining--; n.joining == 0 && n.settled != nil {
		close(n.settled)
		n.settled = nil
	}
	if w.inflight == 0 && w.leaveDue && !n.closed {
		n.leaveLocked(w)
	}
}

// setQueued records whether the client is in the queue of the attempt's
// key after the attempt (after a failed one it may be), and keeps its entry
// alive while it stays there. It reports whether the caller may rely on
// being woken (see driver.Queued): the subscription was
// confirmed when the attempt was sent, is still current, and no wake-up
// came since.
func (n *notifier) setQueued(a queueAttempt, queued, failed bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := a.w
	if queued && len(w.waiters) == 0 && (failed || !a.expect) && !n.closed {
		// The last waiter left while the attempt was on its way, or no
		// watch follows the attempt.
		n.leaveLocked(w)
		return false
	}
	w.queued = queued && !n.closed
	if !queued && w.inflight == 0 && !w.leaveDue {
		// Granted: the grant took the client out of the queue.
		delete(n.queues, w.key)
	}
	if !w.queued {
		return false
	}
	w.joined, w.joinWakes = time.Now(), a.wakes
	if n.keeper == nil {
		n.keeper = time.AfterFunc(queueKeepEvery, n.keepQueued)
	}
	return a.sure && n.chans[n.d.ks.channel(w.key)] == w && w.subscribed && w.wakes == a.wakes
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
		switch {
		case !w.queued || now.Sub(w.joined) < queueKeepEvery:
		case len(w.waiters) > 0:
			keys = append(keys, w.key)
			w.joined = now
			n.queues[w.key] = now
		default:
			// Queued by an attempt whose caller never watched (it gave
			// up in between).
			n.leaveLocked(w)
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
		if w.queued {
			n.keeper = time.AfterFunc(queueKeepEvery, n.keepQueued)
			return
		}
	}
}

// leaveLocked takes the client out of w's queue in the background, once
// no attempt that may join it is in flight (a leave sent before such an
// attempt reaches the server would be undone by it). n.mu must be held.
func (n *notifier) leaveLocked(w *watched) {
	w.queued = false
	if w.inflight > 0 {
		w.leaveDue = true
		return
	}
	w.leaveDue = false
	go n.leave(w.key)
}

// leave takes the client out of key's queue.
func (n *notifier) leave(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	channel := n.d.ks.channel(key)
	all := n.d.ks.allKeys(key)
	_, err := n.d.run(ctx, leaveScript, []string{all[0], all[3], all[4]}, []any{n.d.id, channel}, nil)
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.chans[channel]; err == nil && (w == nil || !w.queued && w.inflight == 0 && !w.leaveDue) {
		delete(n.queues, key)
	}
	// Otherwise Close leaves it (if the entry may still be alive then).
}

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
		n.d.leaveQueues(ctx, keys)
	}
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	return err
}
