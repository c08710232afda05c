package redlock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

// Node timeouts, when Options.NodeTimeout is zero: an acquire or refresh
// waits for a node at most its TTL/10, but at least minNodeTimeout and at
// most maxNodeTimeout; a release or an inspect waits maxNodeTimeout.
const (
	minNodeTimeout = 50 * time.Millisecond
	maxNodeTimeout = 500 * time.Millisecond
)

// Options configure the driver. The zero value gives the defaults.
type Options struct {
	// Prefix goes before every lock name to make its Redis key on each
	// node, as in redisdlock.Options; the default, empty, makes the key
	// exactly the lock's name, as redsync does.
	Prefix string
	// FenceTTL is how long a key's fence counter lives on a node after the
	// key's last grant, at least a second. Default (zero) 30 days.
	FenceTTL time.Duration
	// NodeTimeout bounds how long one operation waits for one node. Zero
	// (the default) means: TTL/10, at least 50 ms and at most 500 ms, for
	// acquire and refresh; 500 ms for release and inspect. An operation
	// returns as soon as a majority has decided it, whatever the timeout.
	NodeTimeout time.Duration
}

// locker is the Redlock driver.Locker over independent Redis masters: one
// engine per node and the majority rules.
type locker struct {
	nodes   []*redisengine.Engine
	clients []redis.UniversalClient // closed by Close when opened from a URL
	quorum  int
	timeout time.Duration // Options.NodeTimeout
	attempt atomic.Uint64 // the last attempt number
	closed  atomic.Bool
	// permits are the semaphore permits this driver asked for and has
	// not released: their Release waits for every node.
	permits permitSet
}

var (
	_ driver.Locker   = (*locker)(nil)
	_ driver.Notifier = (*locker)(nil)
)

// NewDriver returns a driver over go-redis clients the application already
// has, one per Redis node; each node should be an independent master
// (a *redis.Client; not a cluster, and not replicas of each other). Accepts
// []*redis.Client and []redis.UniversalClient alike. The driver also
// implements driver.Notifier, driver.BatchRefresher, driver.Lister,
// driver.ForceReleaser and driver.SharedLocker (semaphores and RW locks;
// see AcquireShared for the quorum a permit needs). It does not close the
// clients. No clients, a nil
// client or Options that are not valid give an error matching
// dlock.ErrInvalidOption.
func NewDriver[C redis.UniversalClient](clients []C, opts Options) (driver.Locker, error) {
	nodes := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		nodes[i] = c
	}
	d, err := newLocker(nodes, opts)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// newLocker returns the driver over clients, one engine per node.
func newLocker(clients []redis.UniversalClient, opts Options) (*locker, error) {
	if len(clients) == 0 {
		return nil, fmt.Errorf("%w: redlock needs at least one redis client", driver.ErrInvalidOption)
	}
	if opts.NodeTimeout < 0 {
		return nil, fmt.Errorf("%w: redlock node timeout %v is negative", driver.ErrInvalidOption, opts.NodeTimeout)
	}
	d := &locker{quorum: len(clients)/2 + 1, timeout: opts.NodeTimeout}
	for i, c := range clients {
		if v := reflect.ValueOf(c); !v.IsValid() || (v.Kind() == reflect.Pointer && v.IsNil()) {
			return nil, fmt.Errorf("%w: redlock redis client %d is nil", driver.ErrInvalidOption, i)
		}
		n, err := redisengine.New(c, redisengine.Config{Prefix: opts.Prefix, FenceTTL: opts.FenceTTL})
		if err != nil {
			for _, n := range d.nodes {
				_ = n.Close()
			}
			return nil, err
		}
		d.nodes = append(d.nodes, n)
	}
	return d, nil
}

// NewClient returns a dlock Client over go-redis clients the application
// already has, one per node; see NewDriver. The Client's Close does not
// close them.
func NewClient[C redis.UniversalClient](clients []C, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(clients, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// Capabilities implements driver.Locker: fences, and the TTL bounds of one
// Redis server.
func (d *locker) Capabilities() driver.Capabilities {
	return driver.Capabilities{Backend: "redlock", Fencing: true, MinTTL: redisengine.MinTTL, MaxTTL: redisengine.MaxTTL}
}

// nodeTimeout returns the per-node timeout of an operation with ttl (zero:
// an operation without one).
func (d *locker) nodeTimeout(ttl time.Duration) time.Duration {
	switch {
	case d.timeout > 0:
		return d.timeout
	case ttl == 0:
		return maxNodeTimeout
	}
	return min(max(ttl/10, minNodeTimeout), maxNodeTimeout)
}

type grant struct {
	node  int
	fence uint64
}

// Acquire implements driver.Locker with the Redlock algorithm: one attempt
// on every node at once; granted when a majority grants it within the
// lease's validity, with a fence that a second round records on a majority
// unless the granting nodes already agree on it. Otherwise whatever was
// granted is given back on every node.
func (d *locker) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	return d.acquire(ctx, req, d.quorum, func(ctx context.Context, n *redisengine.Engine, attempt uint64) (driver.Result, error) {
		return n.AcquireCounted(ctx, req, attempt)
	})
}

// acquire makes one attempt with call on every node at once, granted when
// quorum nodes grant it within the validity (see Acquire). A node's
// ErrLimitMismatch counts as a refusal; when so many nodes give it that no
// quorum can grant, the attempt fails with it.
func (d *locker) acquire(ctx context.Context, req driver.Request, quorum int, call func(context.Context, *redisengine.Engine, uint64) (driver.Result, error)) (driver.Result, error) {
	if d.closed.Load() {
		return driver.Result{}, driver.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return driver.Result{}, err
	}
	attempt := d.nextAttempt()
	start := time.Now()
	validUntil := driver.ValidUntil(start, req.TTL)
	timeout := d.nodeTimeout(req.TTL)

	t := tally{n: len(d.nodes), quorum: quorum}
	var (
		granted    []grant
		holders    []time.Duration
		queued     []time.Duration
		writer     bool
		mismatches int
		mismatch   error
	)
	f := startFanout(ctx, d.nodes, timeout, func(ctx context.Context, n *redisengine.Engine) (driver.Result, error) {
		return call(ctx, n, attempt)
	})
	take := func(r reply[driver.Result]) bool {
		switch {
		case errors.Is(r.err, driver.ErrLimitMismatch):
			t.refused++
			mismatches++
			mismatch = r.err
		case r.err != nil:
			t.fail(r.err)
		case r.val.Acquired:
			t.ok++
			granted = append(granted, grant{r.node, r.val.Fence})
		default:
			t.refused++
			holders = append(holders, r.val.HolderTTL)
			writer = writer || r.val.WriterWaiting
			if r.val.Queued.Wait > 0 {
				queued = append(queued, r.val.Queued.Wait)
			}
		}
		return t.decided()
	}
	err := f.collect(ctx, take)
	if err == nil && t.ok < t.quorum && t.ok+t.refused < t.quorum {
		// Not granted, and too few nodes answered yet to tell contention
		// from unavailability: hear the rest (within the node timeout).
		err = f.collect(ctx, func(r reply[driver.Result]) bool { take(r); return false })
	}
	if err != nil || t.ok < t.quorum {
		d.giveBack(f.done, req.Key, req.Token, attempt)
		switch {
		case err != nil:
			return driver.Result{}, fmt.Errorf("redlock: acquire %q: %w", req.Key, err)
		case mismatches > t.n-t.quorum:
			return driver.Result{}, fmt.Errorf("redlock: acquire %q: %w", req.Key, mismatch)
		case t.ok+t.refused < t.quorum:
			return driver.Result{}, t.unavailable(fmt.Sprintf("acquire %q", req.Key), f.unheard())
		}
		res := driver.Result{HolderTTL: holderTTL(holders, t), WriterWaiting: writer}
		if len(queued) >= d.quorum && len(granted) == 0 {
			// Queued on a majority of nodes, which a holder has: their
			// releases will name this client when it is first there.
			// After a split vote nobody may hold the key, and a give-back
			// announces nothing: then the backoff decides.
			res.Queued.Wait = slices.Min(queued)
		}
		return res, nil
	}

	fence := granted[0].fence
	agree := true
	for _, g := range granted[1:] {
		agree = agree && g.fence == fence
		fence = max(fence, g.fence)
	}
	var recErr error
	if !agree {
		recErr = d.recordFence(ctx, req, fence, timeout)
	}
	if elapsed := time.Since(start); !time.Now().Before(validUntil) {
		d.giveBack(f.done, req.Key, req.Token, attempt)
		return driver.Result{}, fmt.Errorf("%w: redlock: acquire %q: a majority granted it after %v, past the validity of its %v TTL; given back",
			driver.ErrUnavailable, req.Key, elapsed.Round(time.Millisecond), req.TTL)
	}
	if recErr != nil {
		d.giveBack(f.done, req.Key, req.Token, attempt)
		return driver.Result{}, recErr
	}
	settle(d, f, []driver.Request{req}, []uint64{fence}, func(r driver.Result) []driver.Result { return []driver.Result{r} })
	return driver.Result{Acquired: true, Fence: fence, ValidUntil: validUntil}, nil
}

// settle hears, in the background, the replies of an attempt's fanout
// that its decision did not wait for, and records the attempt's fence of
// each key (fences[i] for reqs[i]) on every node whose reply granted the
// key with another fence, or never came: a node whose grant answered late
// keeps no fence of its own, so that every node holding the grant reports
// the holder's fence. results reads a reply's results, in reqs' order.
func settle[T any](d *locker, f *fanout[T], reqs []driver.Request, fences []uint64, results func(T) []driver.Result) {
	if f.pending == 0 {
		return
	}
	go func() {
		for f.pending > 0 {
			r := <-f.replies
			f.pending--
			var res []driver.Result
			if r.err == nil {
				res = results(r.val)
			}
			n := d.nodes[r.node]
			ctx, cancel := context.WithTimeout(context.Background(), max(d.nodeTimeout(0), time.Second))
			for i, req := range reqs {
				if r.err == nil && (i >= len(res) || !res[i].Acquired || res[i].Fence == fences[i]) {
					continue
				}
				_, _ = n.RaiseFence(ctx, req.Key, req.Token, fences[i])
			}
			cancel()
		}
	}()
}

// recordFence is the second round of an acquire: it raises the key's fence
// counter to fence on every node, and succeeds once a majority of nodes
// hold the grant with that fence, marked recorded. Every later majority
// then includes a node that knows it, and Inspect reports it (see
// grantFence).
func (d *locker) recordFence(ctx context.Context, req driver.Request, fence uint64, timeout time.Duration) error {
	t := tally{n: len(d.nodes), quorum: d.quorum}
	f := startFanout(ctx, d.nodes, timeout, func(ctx context.Context, n *redisengine.Engine) (bool, error) {
		return n.RaiseFence(ctx, req.Key, req.Token, fence)
	})
	err := f.collect(ctx, func(r reply[bool]) bool {
		switch {
		case r.err != nil:
			t.fail(r.err)
		case r.val:
			t.ok++
		default:
			t.refused++ // the node does not hold the grant
		}
		return t.decided()
	})
	switch {
	case err != nil:
		return fmt.Errorf("redlock: acquire %q: recording the fence: %w", req.Key, err)
	case t.refused > t.n-t.quorum:
		return fmt.Errorf("%w: redlock: acquire %q: recording the fence: %d of %d nodes no longer hold the grant", driver.ErrUnavailable, req.Key, t.refused, t.n)
	case t.ok < t.quorum:
		return t.unavailable(fmt.Sprintf("acquire %q: recording the fence", req.Key), f.unheard())
	}
	return nil
}

// holderTTL estimates when the key may be free: the holder's lease counts
// as long as so many nodes hold it that the rest cannot form a majority,
// that is, until the (refused-(N-quorum))-th shortest holder TTL runs out.
// Zero when unknown.
func holderTTL(ttls []time.Duration, t tally) time.Duration {
	slices.Sort(ttls)
	k := max(t.refused-(t.n-t.quorum), 1)
	if k > len(ttls) {
		return 0
	}
	return ttls[k-1]
}

// giveBack undoes what an attempt took, on every node, in the background
// and without waking waiters: on each node, once the attempt's request has
// returned (done[i]), it frees the key if this attempt holds it there.
func (d *locker) giveBack(done []chan struct{}, key, token string, attempt uint64) {
	d.giveBackMany(done, []driver.Request{{Key: key, Token: token}}, attempt)
}

// nextAttempt returns a new attempt number: increasing within the process
// and, being the time in microseconds when possible, across restarts.
func (d *locker) nextAttempt() uint64 {
	for {
		last := d.attempt.Load()
		next := max(last+1, uint64(time.Now().UnixMicro()))
		if d.attempt.CompareAndSwap(last, next) {
			return next
		}
	}
}

// Refresh implements driver.Locker: it extends the lease on every node that
// token still holds, and succeeds when a majority did (for a semaphore's
// permit, the permit's quorum: see sharedQuorum). When so many nodes
// say the key is not token's that no majority can, the lock is lost and the
// error wraps ErrNotHeld.
func (d *locker) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	if d.closed.Load() {
		return driver.ErrClosed
	}
	d.permits.extend(tokenKey{key, token}, ttl)
	t := tally{n: len(d.nodes), quorum: d.quorum}
	f := startFanout(ctx, d.nodes, d.nodeTimeout(ttl), func(ctx context.Context, n *redisengine.Engine) (int, error) {
		return n.RefreshGrant(ctx, key, token, ttl)
	})
	if err := f.collect(ctx, func(r reply[int]) bool {
		d.raiseQuorum(&t, r.val, r.err)
		return t.count(reply[struct{}]{node: r.node, err: r.err})
	}); err != nil {
		return fmt.Errorf("redlock: refresh %q: %w", key, err)
	}
	return t.result("refresh", key, f.unheard())
}

// Release implements driver.Locker: it frees key on every node token holds
// (waking waiters there), and succeeds when a majority did. When so many
// nodes say the key is not token's that no majority could, the error wraps
// ErrNotHeld. Nodes that answer after the majority are released all the
// same; the release of a semaphore permit waits for every node's answer,
// or its node timeout.
func (d *locker) Release(ctx context.Context, key, token string) error {
	if d.closed.Load() {
		return driver.ErrClosed
	}
	t := tally{n: len(d.nodes), quorum: d.quorum}
	f := startFanout(ctx, d.nodes, d.nodeTimeout(0), func(ctx context.Context, n *redisengine.Engine) (struct{}, error) {
		return struct{}{}, n.Release(ctx, key, token)
	})
	take := t.count
	if d.permits.take(tokenKey{key, token}) {
		// A permit's release waits for every node's answer (each bounded
		// by the node timeout), not only a majority's: the next permit
		// needs more than a majority, and must not meet this one on a
		// straggling node.
		take = func(r reply[struct{}]) bool { t.count(r); return false }
	}
	if err := f.collect(ctx, take); err != nil && t.ok < t.quorum {
		return fmt.Errorf("redlock: release %q: %w", key, err)
	}
	return t.result("release", key, f.unheard())
}

// count tallies a refresh or release reply.
func (t *tally) count(r reply[struct{}]) bool {
	switch {
	case r.err == nil:
		t.ok++
	case errors.Is(r.err, driver.ErrNotHeld):
		t.refused++
	default:
		t.fail(r.err)
	}
	return t.decided()
}

func (t *tally) result(op, key string, unheard []string) error {
	switch {
	case t.ok >= t.quorum:
		return nil
	case t.refused > t.n-t.quorum:
		return fmt.Errorf("%w: redlock: %s %q: %d of %d nodes say the key is not ours (a majority is %d)", driver.ErrNotHeld, op, key, t.refused, t.n, t.quorum)
	}
	return t.unavailable(fmt.Sprintf("%s %q", op, key), unheard)
}

type holding struct {
	info     driver.Info
	token    string
	recorded bool // the fence was recorded by a second round (recordFence, settle)
}

// Inspect implements driver.Locker. The key is held when a majority of
// nodes hold it for the same token; its TTL is then how long a majority
// still holds it, and its fence the one most of them report. A free key
// reports fence 0. It needs a majority of nodes to answer.
func (d *locker) Inspect(ctx context.Context, key string) (driver.Info, error) {
	in, _, err := d.inspect(ctx, key)
	return in, err
}

// inspect is Inspect that also returns the token of the holder ("" when
// the key is free).
func (d *locker) inspect(ctx context.Context, key string) (driver.Info, string, error) {
	if d.closed.Load() {
		return driver.Info{}, "", driver.ErrClosed
	}
	t := tally{n: len(d.nodes), quorum: d.quorum}
	var seen []holding
	f := startFanout(ctx, d.nodes, d.nodeTimeout(0), func(ctx context.Context, n *redisengine.Engine) (holding, error) {
		in, token, recorded, err := n.InspectGrant(ctx, key)
		return holding{in, token, recorded}, err
	})
	err := f.collect(ctx, func(r reply[holding]) bool {
		if r.err != nil {
			t.fail(r.err)
		} else {
			t.ok++
			seen = append(seen, r.val)
		}
		return false // hear every node that answers in time
	})
	if err != nil {
		return driver.Info{}, "", fmt.Errorf("redlock: inspect %q: %w", key, err)
	}
	if t.ok < t.quorum {
		return driver.Info{}, "", t.unavailable(fmt.Sprintf("inspect %q", key), f.unheard())
	}
	in, token := d.holder(seen)
	return in, token, nil
}

// holder returns what the nodes' answers seen say of one key: held, with
// the holder's token, when a majority of nodes hold it for the same token;
// its TTL is then how long a majority still holds it, and its fence the
// holder's (see grantFence).
func (d *locker) holder(seen []holding) (driver.Info, string) {
	byToken := map[string][]holding{}
	for _, h := range seen {
		if h.info.Held {
			byToken[h.token] = append(byToken[h.token], h)
		}
	}
	for token, hs := range byToken {
		if len(hs) < d.quorum {
			continue
		}
		// Longest first: the quorum-th is how long a majority holds it.
		slices.SortFunc(hs, func(a, b holding) int { return cmp.Compare(b.info.TTL, a.info.TTL) })
		return driver.Info{Held: true, TTL: hs[d.quorum-1].info.TTL, Fence: d.grantFence(hs), Metadata: commonMetadata(hs), Waiters: -1}, token
	}
	return driver.Info{Waiters: -1}, ""
}

// grantFence returns the fence of one holder's grant from the nodes that
// hold it, hs. Nodes can disagree for a moment: the majority that granted
// it may have chosen different fences, the grant taking the highest and
// recording it in a second round, and a node whose grant answered after
// the decision keeps a fence of its own until settle records the grant's.
// So: a fence recorded by the second round, when a node has one; else the
// fence a majority of all nodes hold (the granting majority agreed on it);
// else, the second round under way, the highest.
func (d *locker) grantFence(hs []holding) uint64 {
	var rec, top uint64
	counts := map[uint64]int{}
	for _, h := range hs {
		if h.recorded {
			rec = max(rec, h.info.Fence)
		}
		counts[h.info.Fence]++
		top = max(top, h.info.Fence)
	}
	if rec != 0 {
		return rec
	}
	for f, c := range counts {
		if c >= d.quorum {
			return f
		}
	}
	return top
}

// commonMetadata returns the metadata most nodes report (on a tie, the
// one of the longest lease, first in hs): after a SetMetadata that a
// majority took, the new value.
func commonMetadata(hs []holding) string {
	counts := map[string]int{}
	best := hs[0].info.Metadata
	for _, h := range hs {
		m := h.info.Metadata
		counts[m]++
		if counts[m] > counts[best] {
			best = m
		}
	}
	return best
}

// Close implements driver.Locker: it closes the per-node drivers, all at
// once — each leaves the waiting queues the client joined on its node and
// closes its pub/sub connection, within a bound of its own (see
// redisengine.Engine.Close) — and then, when the driver was opened from a
// URL, the go-redis clients. Locks still held expire on the nodes.
func (d *locker) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	errs := make([]error, len(d.nodes), len(d.nodes)+len(d.clients))
	var wg sync.WaitGroup
	for i, n := range d.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Close()
		}()
	}
	wg.Wait()
	for _, c := range d.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
