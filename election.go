package dlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// Election is a leader election on one key: at most one candidate is
// leader at a time, and each term carries a fencing token strictly
// increasing across the election's leaders. Leadership is a *Lock of the
// election's key whose metadata is the leader's value, so it has
// everything a lock has: a TTL refreshed in the background, Done closing
// before anyone else can be elected, and the release (Unlock) that resigns.
// Candidates wait for the key as Lock waits: in the backend's FIFO queue
// where it has one, woken by release notifications elsewhere.
//
// It is safe for concurrent use; make one with Client.Election.
type Election struct {
	c    *Client
	name string
}

// Leader is what an election's key says about its leader.
type Leader struct {
	// Value is the leader's value (Campaign, Proclaim); "" when none.
	Value string
	// Fence is the leader's term: its lock's fencing token. Terms are
	// strictly increasing across the election's leaders.
	Fence uint64
	// Held reports whether the election has a leader now.
	Held bool
}

// ObserveInterval bounds how long Observe goes without reading the
// election's key when nothing tells it of a change.
const ObserveInterval = time.Second

// Election returns the leader election on the key name. Nothing is sent
// until a method is called; an invalid name fails there with an error
// matching ErrInvalidKey.
func (c *Client) Election(name string) *Election { return &Election{c: c, name: name} }

// Name returns the election's key.
func (e *Election) Name() string { return e.name }

// Campaign blocks until this candidate is leader, ctx ends or the retry
// strategy gives up, and returns the leadership as a *Lock of the
// election's key with value stored as its metadata. Its Fence is the term.
// Unlock resigns: the next candidate is elected at once. opts apply as they
// do to Client.Lock (TTL, retry strategy, WithMaxHold); a WithMetadata
// among them is overridden by value.
func (e *Election) Campaign(ctx context.Context, value string, opts ...LockOption) (*Lock, error) {
	return e.c.Lock(ctx, e.name, append(slices.Clip(opts), WithMetadata(value))...)
}

// Proclaim changes the value of the leader lead without a new election:
// the term (Fence) and the lease stay. It fails with an error matching
// ErrNotHeld when lead is no longer leader, and with ErrUnsupported where
// the backend can neither change a held lease's metadata in place
// (driver.MetadataSetter) nor renew a held key (Capabilities.
// ReacquireWithToken). Every driver of this module can.
func (e *Election) Proclaim(ctx context.Context, lead *Lock, value string) error {
	if lead == nil || lead.Key() != e.name {
		return fmt.Errorf("%w: Proclaim needs a leadership of election %q", ErrInvalidOption, e.name)
	}
	if ms, ok := e.c.d.(driver.MetadataSetter); ok {
		if err := lead.Err(); err != nil {
			return err
		}
		err := ms.SetMetadata(ctx, e.name, lead.Token(), value)
		if err != nil {
			if errors.Is(err, driver.ErrNotHeld) {
				err = fmt.Errorf("%w: the leadership of %q is gone", err, e.name)
			}
			return fmt.Errorf("dlock: proclaim %q: %w", e.name, ctxErr(ctx, err))
		}
		return nil
	}
	if !e.c.caps.ReacquireWithToken {
		return fmt.Errorf("%w: changing a leader's value in place (the backend cannot renew a held key)", ErrUnsupported)
	}
	if err := lead.beginRefresh(); err != nil {
		return err
	}
	ttl := lead.currentTTL()
	sent := time.Now()
	res, err := e.c.d.Acquire(ctx, driver.Request{Key: e.name, Token: lead.Token(), TTL: ttl, Metadata: value})
	switch {
	case err != nil:
		// The renewal may have landed or not: the lease is the lock's,
		// refreshed or lost as usual.
		return fmt.Errorf("dlock: proclaim %q: %w", e.name, ctxErr(ctx, err))
	case !res.Acquired:
		err = fmt.Errorf("%w: the leadership of %q is gone", driver.ErrNotHeld, e.name)
	case res.Fence != lead.Fence():
		err = fmt.Errorf("%w: the backend renewed %q with fence %d, not the term's %d", driver.ErrNotHeld, e.name, res.Fence, lead.Fence())
	}
	// The renewal extended the lease as a refresh does.
	return lead.finishRefresh(ctx, sent, ttl, err)
}

// Leader reports the election's current leader, or Held false when it has
// none.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	in, err := e.c.Inspect(ctx, e.name)
	if err != nil {
		return Leader{}, err
	}
	if !in.Held {
		return Leader{}, nil
	}
	return Leader{Value: in.Metadata, Fence: in.Fence, Held: true}, nil
}

// Observe returns a channel of the election's leaders: the current one
// first (Held false when there is none), then every change seen, in term
// order, each once: a new leader, a new value proclaimed, no leader. The
// channel is closed when ctx ends or the client closes.
//
// It reads the election's key when a release notification comes
// (driver.Notifier), then again shortly after until the next leader shows,
// and at least every ObserveInterval (WithObserveInterval changes it); a
// new leader is reported once two reads agree. A term shorter than that on
// a backend without notifications can go unseen. A slow reader never holds
// up the election: changes wait for it in order (the oldest go beyond 1024
// unread).
func (e *Election) Observe(ctx context.Context, opts ...ObserveOption) <-chan Leader {
	cfg := observeConfig{interval: ObserveInterval}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	ch := make(chan Leader)
	go e.observe(ctx, ch, cfg)
	return ch
}

// ObserveOption configures Election.Observe.
type ObserveOption func(*observeConfig)

type observeConfig struct {
	interval time.Duration
}

// MinObserveInterval is the shortest interval WithObserveInterval sets.
const MinObserveInterval = 10 * time.Millisecond

// WithObserveInterval bounds how long Observe goes without reading the
// election's key (default ObserveInterval, 1 s). A shorter interval sees
// shorter terms on a backend whose notifications do not reach this
// client (MySQL), at the cost of one read per interval. Values below
// MinObserveInterval are raised to it; zero or less keeps the default.
func WithObserveInterval(d time.Duration) ObserveOption {
	return func(c *observeConfig) {
		if d > 0 {
			c.interval = max(d, MinObserveInterval)
		}
	}
}

// observeBurst is how soon Observe reads the key again after a release
// notification, while no new leader shows.
var observeBurst = []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond}

const observeBacklog = 1024

// observeConfirm is how soon Observe reads a new leader again before it
// reports it.
const observeConfirm = 2 * time.Millisecond

func (e *Election) observe(ctx context.Context, ch chan<- Leader, cfg observeConfig) {
	defer close(ch)
	c := e.c
	if err := ValidateKey(e.name); err != nil {
		c.log.Warn("dlock: Observe: invalid election name", "err", err)
		return
	}
	var released <-chan struct{}
	if c.notifier != nil {
		watch := c.notifier.WatchReleases
		if o, ok := c.notifier.(driver.ReleaseObserver); ok {
			watch = o.ObserveReleases // takes no candidate's wake-up
		}
		rel, stop, err := watch(ctx, e.name)
		if err != nil {
			c.log.Warn("dlock: Observe: release notifications unavailable; polling", "key", e.name, "err", err)
		} else {
			defer stop()
			released = rel
		}
	}
	var (
		queue   []Leader
		last    Leader
		pending Leader // a new leader read once, to be confirmed
		seen    bool
		burst   = len(observeBurst) // steps of observeBurst left
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var out chan<- Leader
		var head Leader
		if len(queue) > 0 {
			out, head = ch, queue[0]
		}
		select {
		case out <- head:
			queue = queue[1:]
			continue
		case <-ctx.Done():
			return
		case <-c.closeCtx.Done():
			return
		case <-released:
			burst = 0
		case <-timer.C:
		}
		l, err := e.Leader(ctx)
		switch {
		case errors.Is(err, ErrClosed) || ctx.Err() != nil:
			return
		case err != nil:
			c.log.Debug("dlock: Observe: reading the leader failed", "key", e.name, "err", err)
		case (!seen || changed(last, l)) && l.Held && l != pending:
			// A new leader is reported once a second read agrees: a
			// quorum backend's grant under way can show a fence that is
			// not yet the term's (Redlock records it in a second round).
			pending = l
			timer.Reset(observeConfirm)
			continue
		case !seen || changed(last, l):
			seen, last = true, l
			if len(queue) == observeBacklog {
				queue = queue[1:]
			}
			queue = append(queue, l)
			if l.Held {
				burst = len(observeBurst) // the next leader is here
			}
		}
		pending = Leader{}
		next := cfg.interval
		if burst < len(observeBurst) {
			next, burst = min(observeBurst[burst], cfg.interval), burst+1
		}
		timer.Reset(next)
	}
}

// changed reports whether now is a change to report after last: a later
// term, a new value in the same term, or the end of a term. A read older
// than last (a lagging replica) is not.
func changed(last, now Leader) bool {
	switch {
	case now.Held && last.Held:
		return now.Fence > last.Fence || now.Fence == last.Fence && now.Value != last.Value
	default:
		return now.Held != last.Held
	}
}

// Lead runs fn while this candidate is leader, with value: it campaigns,
// runs fn with a context cancelled the moment the leadership is lost
// (context.Cause then matches ErrLost), and resigns when fn returns. After
// a loss it campaigns again, until ctx ends. It returns fn's error when fn
// returns while still leader (nil included), or ctx's error.
func (e *Election) Lead(ctx context.Context, value string, fn func(ctx context.Context) error, opts ...LockOption) error {
	if fn == nil {
		return fmt.Errorf("%w: Lead needs a non-nil fn", ErrInvalidOption)
	}
	opts = append(slices.Clip(opts), WithMetadata(value))
	for {
		ferr, lost, err := e.c.do(ctx, e.name, fn, opts)
		switch {
		case lost != nil && ctx.Err() == nil:
			e.c.log.Warn("dlock: leadership lost; campaigning again", "key", e.name, "err", lost)
			continue
		case lost != nil:
			return ctx.Err()
		case ferr != nil:
			return ferr
		}
		return err
	}
}
