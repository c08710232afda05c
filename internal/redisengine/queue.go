package redisengine

import (
	"context"
	"strconv"
	"time"
)

// The waiting queue of a key (see the key layout): a client that waits for
// a key joins it with its failed attempts, renews its entry while it
// waits, and leaves when it stops waiting or closes. The notifier keeps the
// client's side of it.

const (
	// queueEntryTTL is how long a client's entry in a key's waiting queue
	// lives after its last attempt or renewal: a waiter that went away
	// (crashed) keeps a free key from the others at most this long.
	// queueKeepEvery is how often a waiting client renews it.
	queueEntryTTL  = 3 * time.Second
	queueKeepEvery = queueEntryTTL / 3
)

var queueEntryTTLms = strconv.FormatInt(queueEntryTTL.Milliseconds(), 10)

// queueAttempt is an attempt's view of the key's release channel: whether
// the attempt joins the key's queue when it fails, and whether its caller
// could be told it is queued (see driver.Queued).
type queueAttempt struct {
	w      *watched // nil: the attempt does not join
	wakes  uint64   // w.wakes when the attempt was sent
	sure   bool     // the subscription was confirmed when the attempt was sent
	expect bool     // the caller, not watching yet, watches next (driver.Hints.Wait)
}

// joins is the script argument that says whether the attempt joins the
// queue when it fails: "1" or "0".
func (a queueAttempt) joins() string {
	if a.w != nil {
		return "1"
	}
	return "0"
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
		w := n.chans[n.e.ks.channel(key)]
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
	return a.sure && n.chans[n.e.ks.channel(w.key)] == w && w.subscribed && w.wakes == a.wakes
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
		n.e.stayQueued(ctx, keys)
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
	channel := n.e.ks.channel(key)
	all := n.e.ks.allKeys(key)
	_, err := n.e.run(ctx, leaveScript, []string{all[0], all[3], all[4]}, []any{n.e.id, channel}, nil)
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.chans[channel]; err == nil && (w == nil || !w.queued && w.inflight == 0 && !w.leaveDue) {
		delete(n.queues, key)
	}
	// Otherwise Close leaves it (if the entry may still be alive then).
}
