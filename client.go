package dlock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// Client takes locks on one backend. It is safe for concurrent use. Create
// one with Open, or with a driver package's constructor from a client the
// application already has, and Close it when done.
type Client struct {
	d        driver.Locker
	notifier driver.Notifier
	queuer   driver.Queuer
	batch    *batchRefresher
	caps     driver.Capabilities
	cfg      clientConfig
	log      *slog.Logger
	meta     string

	mu     sync.Mutex
	closed bool
	// closeCtx is cancelled by Close: its Done channel wakes waiters, and
	// context.AfterFunc ties contexts to it.
	closeCtx    context.Context
	closeCancel context.CancelFunc
	held        map[*Lock]struct{}
	heldKeys    map[string]int
	turns       map[string]*keyTurn
	// cleaning holds the background releases of attempts whose outcome
	// is unknown (see cleanup.go); driverClosing stops new ones once
	// Close waits for them.
	cleaning      map[tokenKey]*cleanup
	driverClosing bool
}

// NewClient returns a Client over a driver. Driver packages call it from
// their constructors; applications normally use Open or those constructors.
// The Client owns d and closes it on Close.
func NewClient(d driver.Locker, opts ...Option) *Client {
	c := &Client{
		d:        d,
		caps:     ttlBounds(d.Capabilities()),
		held:     map[*Lock]struct{}{},
		heldKeys: map[string]int{},
		turns:    map[string]*keyTurn{},
		cleaning: map[tokenKey]*cleanup{},
		cfg:      clientConfig{tokens: RandomToken},
		meta:     defaultMetadata(),
	}
	for _, o := range opts {
		o(&c.cfg)
	}
	c.closeCtx, c.closeCancel = context.WithCancel(context.Background())
	c.log = c.cfg.logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.notifier, _ = d.(driver.Notifier)
	c.queuer, _ = d.(driver.Queuer)
	if br, ok := d.(driver.BatchRefresher); ok {
		c.batch = newBatchRefresher(c, br)
	}
	return c
}

var defaultMetadata = sync.OnceValue(DefaultMetadata)

// ttlBounds fills in the portable TTL bounds: MinTTL at least the portable
// minimum, MaxTTL at most the portable maximum, which is also the ceiling of
// a driver that declares none.
func ttlBounds(caps driver.Capabilities) driver.Capabilities {
	caps.MinTTL = max(caps.MinTTL, MinTTL)
	if caps.MaxTTL <= 0 || caps.MaxTTL > MaxTTL {
		caps.MaxTTL = MaxTTL
	}
	return caps
}

// Capabilities reports what the backend offers: fencing, FIFO queueing and
// the TTL bounds Lock, TryLock, Do and Refresh accept. MinTTL is at least
// the portable MinTTL and MaxTTL at most the portable MaxTTL (the maximum of
// a backend that declares none).
func (c *Client) Capabilities() driver.Capabilities { return c.caps }

// Info describes a key, as returned by Inspect.
type Info struct {
	// Key is the key inspected.
	Key string
	// Held reports whether some owner holds the key.
	Held bool
	// Fence is the holder's fencing token when Held; when free, the last
	// fence granted if the backend keeps it, else zero.
	Fence uint64
	// TTL is the holder's remaining lease as the backend sees it.
	TTL time.Duration
	// Metadata is what the holder stored with the lock (see WithMetadata).
	Metadata string
	// Waiters counts queued waiters on FIFO backends; -1 when unknown.
	Waiters int
}

// Inspect reports whether key is held, by whom, with which fence and for how
// much longer, without changing it.
func (c *Client) Inspect(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if c.isClosed() {
		return Info{}, ErrClosed
	}
	in, err := c.d.Inspect(ctx, key)
	if err != nil {
		return Info{}, ctxErr(ctx, err)
	}
	return infoOf(key, in), nil
}

// TryLock makes exactly one attempt to take key. When another owner holds it
// the error matches ErrNotAcquired.
//
// When the attempt's outcome is unknown — ctx ended while the request was in
// flight, the connection broke, the backend timed out — the server may still
// grant it after TryLock returned. The client then releases that attempt's
// token in the background, owner-checked (it can free nothing but that
// grant), repeating the release on a short schedule for about a second (the
// request may land after a first release), so the key is not left held for
// the TTL by nobody. Close waits for these releases.
func (c *Client) TryLock(ctx context.Context, key string, opts ...LockOption) (*Lock, error) {
	return c.acquire(ctx, key, opts, true)
}

// Lock takes key, waiting while another owner holds it until the lock is
// granted, the retry strategy gives up (ErrNotAcquired) or ctx ends (an
// error matching ctx.Err()). A waiter wakes on the backend's release
// notification where there is one, on its backoff, or when the holder's
// lease runs out, whichever comes first. On backends with a native queue
// (etcd, ZooKeeper) it waits in FIFO order. A waiter whose ctx ends leaves
// nothing behind: an attempt in flight at that moment (or one whose outcome
// is unknown for another reason) is released in the background, as for
// TryLock, and a waiter that goes on after a passing failure makes its next
// attempts with a new token (or, with WithToken, only once that release is
// over), so the background release never frees the lock it then gets.
func (c *Client) Lock(ctx context.Context, key string, opts ...LockOption) (*Lock, error) {
	return c.acquire(ctx, key, opts, false)
}

// Do takes key with Lock, runs fn with a context that is cancelled the moment
// the lock is lost (context.Cause then matches ErrLost), and unlocks. It
// returns fn's error; or, when fn succeeded, the error that ended the lock
// early (matching ErrLost) or Unlock's error.
//
// The unlock uses a context detached from ctx's cancellation, bounded by the
// TTL (at least 1 s, at most 10 s). It also runs when fn panics (or calls
// runtime.Goexit): fn's context is cancelled, the key is released, and the
// panic then goes on up the stack with its own value, so a recover above Do
// (net/http recovers every handler) never leaves the key held and
// refreshed. A nil fn is an error matching ErrInvalidOption; nothing is
// acquired.
func (c *Client) Do(ctx context.Context, key string, fn func(ctx context.Context) error, opts ...LockOption) error {
	if fn == nil {
		return fmt.Errorf("%w: Do needs a non-nil fn", ErrInvalidOption)
	}
	l, err := c.Lock(ctx, key, opts...)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-l.Done():
			cancel(l.Err())
		case <-fctx.Done():
		}
	}()
	unlock := func() error {
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout(l.currentTTL()))
		defer ucancel()
		return l.Unlock(uctx)
	}
	returned := false
	defer func() {
		if !returned {
			// fn panicked or called runtime.Goexit. Not recovered: the
			// panic continues once the key is released.
			cancel(errFnPanicked)
			_ = unlock()
		}
	}()
	ferr := fn(fctx)
	returned = true
	lostErr := l.Err()
	cancel(context.Canceled)
	uerr := unlock()
	switch {
	case ferr != nil:
		return ferr
	case lostErr != nil:
		return lostErr
	case uerr != nil:
		return uerr
	}
	return nil
}

var errFnPanicked = errors.New("dlock: Do's fn panicked")

func unlockTimeout(ttl time.Duration) time.Duration {
	return min(max(ttl, time.Second), 10*time.Second)
}

// Close releases the locks the client still holds (best effort, bounded by a
// few seconds), stops their refresh, wakes its waiters with ErrClosed, waits
// (at most 2 s) for the background releases of attempts whose outcome was
// unknown (see TryLock), and closes the backend connection. It is safe to
// call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.closeCancel()
	locks := make([]*Lock, 0, len(c.held))
	for l := range c.held {
		locks = append(locks, l)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range locks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = l.unlock(ctx, errClientClosed)
		}()
	}
	// Releases of attempts whose outcome is unknown finish first: a process
	// that exits right after Close would otherwise leave their grants held.
	c.waitCleanups(time.Now().Add(cleanupWindow))
	wg.Wait()
	return c.d.Close()
}

var errClientClosed = fmt.Errorf("%w: client closed", ErrNotHeld)

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) lockConfig(opts []LockOption) (lockConfig, error) {
	cfg := lockConfig{retry: DefaultRetry, autoRefresh: true}
	for _, o := range c.cfg.defaults {
		o(&cfg)
	}
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.hasTTL {
		// The default fits the backend; a TTL asked for is checked as is.
		cfg.ttl = min(DefaultTTL, c.caps.MaxTTL)
	}
	if err := c.checkTTL(cfg.ttl); err != nil {
		return cfg, err
	}
	if !cfg.hasMeta {
		cfg.metadata = c.meta
	}
	if cfg.token != "" {
		cfg.tokenGiven = true
		return cfg, nil
	}
	t, err := c.newToken()
	cfg.token = t
	return cfg, err
}

func (c *Client) newToken() (string, error) {
	t, err := c.cfg.tokens()
	if err != nil {
		return "", err
	}
	if t == "" {
		return "", fmt.Errorf("%w: token generator returned an empty token", ErrInvalidOption)
	}
	return t, nil
}

// checkTTL rejects a TTL outside the backend's bounds (which ttlBounds made
// lie within the portable ones), so that no deadline computed from it can
// overflow, here or in the driver.
func (c *Client) checkTTL(ttl time.Duration) error {
	if err := validateTTL(ttl); err != nil {
		return err
	}
	if ttl < c.caps.MinTTL {
		return fmt.Errorf("%w: %v is below this backend's minimum of %v", ErrInvalidTTL, ttl, c.caps.MinTTL)
	}
	if ttl > c.caps.MaxTTL {
		return fmt.Errorf("%w: %v is above this backend's maximum of %v", ErrInvalidTTL, ttl, c.caps.MaxTTL)
	}
	return nil
}

func (c *Client) acquire(ctx context.Context, key string, opts []LockOption, try bool) (*Lock, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if c.isClosed() {
		return nil, ErrClosed
	}
	cfg, err := c.lockConfig(opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req := driver.Request{Key: key, Token: cfg.token, TTL: cfg.ttl, Metadata: cfg.metadata, AutoRefresh: cfg.autoRefresh,
		Wait: !try && cfg.retry.NextBackoff(1) >= 0}
	start := time.Now()
	if !try && c.queuer != nil && cfg.retry.NextBackoff(1) >= 0 {
		return c.acquireQueued(ctx, req, cfg, start)
	}

	var (
		kt     *keyTurn
		waited time.Duration
	)
	if !try {
		var giveUp func()
		kt, giveUp, waited, err = c.waitTurn(ctx, key, cfg.retry, start)
		if err != nil {
			return nil, c.waitEnded(key, 0, time.Since(start), err)
		}
		defer giveUp()
	}

	var (
		lastErr error
		timer   *time.Timer
	)
	for attempt := 1; ; attempt++ {
		if err := c.awaitCleaning(ctx, key, req.Token); err != nil {
			// Only a token given with WithToken can meet a release of
			// its own earlier attempt still under way.
			return nil, c.waitEnded(key, attempt, waited, err)
		}
		sent := time.Now()
		res, err := c.d.Acquire(ctx, req)
		if err != nil {
			// The request may have been granted all the same.
			c.cleanUnknown(key, req.Token, err)
			if try || attempt == 1 || !transient(ctx, err) {
				return nil, c.waitEnded(key, attempt, waited, ctxErr(ctx, err))
			}
			// A waiter that reached the backend before rides out a
			// passing failure (a server restart, a stale pooled
			// connection) on its backoff, until its ctx ends. Its next
			// attempt must not share a token with the release just
			// started (a given token waits for it instead).
			c.log.Warn("dlock: attempt failed while waiting; retrying", "key", key, "err", err)
			lastErr, res = err, driver.Result{}
			if !cfg.tokenGiven {
				t, err := c.newToken()
				if err != nil {
					return nil, err
				}
				req.Token, cfg.token = t, t
			}
		} else {
			lastErr = nil
		}
		if res.Acquired {
			if l := c.grant(req, cfg, res, sent, start, attempt, waited); l != nil {
				return l, nil
			}
			// The reply came after the validity deadline (not a grant), or
			// the client was closed meanwhile.
			if c.isClosed() {
				return nil, ErrClosed
			}
			if !cfg.tokenGiven {
				// The late grant's release may still be on its way (to some
				// nodes of a quorum): the next attempt must not share its
				// token.
				t, err := c.newToken()
				if err != nil {
					return nil, err
				}
				req.Token, cfg.token = t, t
			}
		}
		if try {
			return nil, fmt.Errorf("%w: %q is held by another owner", ErrNotAcquired, key)
		}
		if kt.watch == nil && c.notifier != nil {
			// One subscription per client and key, kept by the key's turn
			// for every local waiter after this one.
			ch, stop, err := c.notifier.WatchReleases(ctx, key)
			if err == nil {
				kt.watch, kt.stopWatch = ch, stop
				if res.QueuedWait == 0 {
					// The key may have been released between the
					// attempt and the subscription: try again at once.
					// (A queued attempt was made under a subscription
					// already up, whose announcements reach this watch.)
					continue
				}
			} else {
				c.log.Warn("dlock: release notifications unavailable; polling", "key", key, "err", err)
			}
		}
		backoff := cfg.retry.NextBackoff(attempt)
		if backoff < 0 {
			return nil, c.waitEnded(key, attempt, waited, fmt.Errorf("%w: %q is held by another owner (gave up after %d attempts)", ErrNotAcquired, key, attempt))
		}
		if res.QueuedWait > 0 && kt.watch != nil {
			// Queued on the server: the release names this client. Wait
			// up to QueuedWait instead of the backoff, longer or shorter:
			// a wake-up that got lost then costs QueuedWait, not a long
			// backoff or the holder's whole TTL.
			backoff = res.QueuedWait
		}
		// (Compared without adding to HolderTTL, which a driver may
		// report as large as a time.Duration goes.)
		if res.HolderTTL > 0 && res.HolderTTL < backoff-time.Millisecond {
			backoff = res.HolderTTL + time.Millisecond
		}
		if timer == nil {
			timer = time.NewTimer(backoff)
			defer timer.Stop()
		} else {
			timer.Reset(backoff)
		}
		t0 := time.Now()
		select {
		case <-ctx.Done():
			err := ctx.Err()
			if lastErr != nil {
				err = fmt.Errorf("%w (last attempt: %w)", err, lastErr)
			}
			return nil, c.waitEnded(key, attempt, waited+time.Since(t0), err)
		case <-c.closeCtx.Done():
			return nil, c.waitEnded(key, attempt, waited+time.Since(t0), ErrClosed)
		case <-kt.watch:
		case <-kt.wake:
		case <-timer.C:
		}
		waited += time.Since(t0)
	}
}

func (c *Client) waitEnded(key string, attempts int, waited time.Duration, err error) error {
	if waited > 0 {
		c.emit(Event{Kind: EventWaited, Key: key, Duration: waited, Attempts: attempts, Err: err})
	}
	return err
}

func (c *Client) acquireQueued(ctx context.Context, req driver.Request, cfg lockConfig, start time.Time) (*Lock, error) {
	// Close wakes queued waiters too, whatever the driver does on Close.
	qctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.closeCtx, func() { cancel(ErrClosed) })
	defer stop()
	res, err := c.queuer.AcquireQueued(qctx, req)
	if err != nil {
		if ctx.Err() == nil && errors.Is(context.Cause(qctx), ErrClosed) {
			err = ErrClosed
		}
		return nil, c.waitEnded(req.Key, 1, time.Since(start), ctxErr(ctx, err))
	}
	if !res.Acquired || res.ValidUntil.IsZero() {
		return nil, fmt.Errorf("dlock: driver broke the Queuer contract for %q (no grant or no validity)", req.Key)
	}
	l := c.grant(req, cfg, res, start, start, 1, time.Since(start))
	if l == nil {
		return nil, fmt.Errorf("%w: %q was granted after its validity ran out", ErrNotAcquired, req.Key)
	}
	return l, nil
}

// grant builds a held Lock from a successful attempt, or releases the key and
// returns nil when the reply came after the validity deadline.
func (c *Client) grant(req driver.Request, cfg lockConfig, res driver.Result, sent, start time.Time, attempts int, waited time.Duration) *Lock {
	deadline := driver.ValidUntil(sent, cfg.ttl)
	if !res.ValidUntil.IsZero() {
		deadline = res.ValidUntil
	}
	now := time.Now()
	if !now.Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout(cfg.ttl))
		_ = c.d.Release(ctx, req.Key, req.Token)
		cancel()
		c.log.Warn("dlock: grant arrived after its validity deadline; released", "key", req.Key)
		return nil
	}
	l := &Lock{
		c:           c,
		key:         req.Key,
		token:       req.Token,
		fence:       res.Fence,
		ttl:         cfg.ttl,
		autoRefresh: cfg.autoRefresh,
		acquiredAt:  now,
		deadline:    deadline,
		lastSent:    sent,
		done:        make(chan struct{}),
		stop:        make(chan struct{}),
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout(cfg.ttl))
		_ = c.d.Release(ctx, req.Key, req.Token)
		cancel()
		return nil
	}
	c.held[l] = struct{}{}
	c.heldKeys[l.key]++
	c.mu.Unlock()
	l.start()
	if waited > 0 {
		c.emit(Event{Kind: EventWaited, Key: req.Key, Duration: waited, Attempts: attempts})
	}
	c.log.Debug("dlock: acquired", "key", req.Key, "fence", res.Fence, "attempts", attempts)
	c.emit(Event{Kind: EventAcquired, Key: req.Key, Fence: res.Fence, Duration: time.Since(start), Attempts: attempts})
	return l
}

func (c *Client) forget(l *Lock) {
	c.mu.Lock()
	if _, ok := c.held[l]; ok {
		delete(c.held, l)
		if c.heldKeys[l.key]--; c.heldKeys[l.key] <= 0 {
			delete(c.heldKeys, l.key)
		}
	}
	c.mu.Unlock()
}

// holdsKey reports whether one of the client's own locks holds key.
func (c *Client) holdsKey(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heldKeys[key] > 0
}

func (c *Client) emit(e Event) {
	if c.cfg.hook != nil {
		c.cfg.hook(e)
	}
}

// transient reports whether err, met while waiting, may pass: anything but
// the end of ctx, invalid input and a closed client.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	for _, permanent := range []error{ErrInvalidKey, ErrInvalidTTL, ErrInvalidOption, ErrClosed, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	return true
}

// ctxErr makes sure an error caused by the end of ctx matches ctx.Err(). A
// deadline that has passed counts even before ctx.Err() says so: a driver
// whose socket deadline is ctx's may fail with a timeout a moment earlier.
func ctxErr(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(dl) {
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
