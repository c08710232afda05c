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
	multi    driver.MultiLocker // nil when the driver takes keys one at a time
	queuer   driver.Queuer
	sharer   driver.SharedLocker
	keeper   driver.ShareKeeper // nil unless the driver is one
	// shareQueuer is nil unless the driver queues shared waits itself.
	shareQueuer driver.SharedQueuer
	batch       *batchRefresher
	caps        driver.Capabilities
	cfg         clientConfig
	log         *slog.Logger
	meta        string

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
	} else if c.caps.Backend != "" {
		c.log = c.log.With("backend", c.caps.Backend)
	}
	c.notifier, _ = d.(driver.Notifier)
	c.queuer, _ = d.(driver.Queuer)
	c.sharer, _ = d.(driver.SharedLocker)
	c.shareQueuer, _ = d.(driver.SharedQueuer)
	c.keeper, _ = d.(driver.ShareKeeper)
	c.multi, _ = d.(driver.MultiLocker)
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
	ferr, lost, err := c.do(ctx, key, fn, opts)
	switch {
	case ferr != nil:
		return ferr
	case lost != nil:
		return lost
	}
	return err
}

// do is Do: it returns fn's error, the error that ended the lock while fn
// ran (matching ErrLost) or nil, and the error of Lock (fn did not run) or
// of Unlock (when the lock was not lost).
func (c *Client) do(ctx context.Context, key string, fn func(ctx context.Context) error, opts []LockOption) (ferr, lost, err error) {
	l, err := c.Lock(ctx, key, opts...)
	if err != nil {
		return nil, nil, err
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
	ferr = fn(fctx)
	returned = true
	lost = l.Err()
	cancel(context.Canceled)
	uerr := unlock()
	if lost != nil {
		return ferr, lost, nil
	}
	return ferr, nil, uerr
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
	if err := c.checkHolds(&cfg); err != nil {
		return cfg, err
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

// checkHolds checks WithMinHold and WithMaxHold, and cuts a TTL longer
// than the maximum hold to it.
func (c *Client) checkHolds(cfg *lockConfig) error {
	switch {
	case cfg.minHold < 0 || cfg.maxHold < 0:
		return fmt.Errorf("%w: a hold of %v, %v is negative", ErrInvalidOption, cfg.minHold, cfg.maxHold)
	case cfg.minHold > c.caps.MaxTTL:
		return fmt.Errorf("%w: WithMinHold(%v) is above this backend's maximum TTL of %v", ErrInvalidOption, cfg.minHold, c.caps.MaxTTL)
	case cfg.maxHold > 0 && cfg.minHold > cfg.maxHold:
		return fmt.Errorf("%w: WithMinHold(%v) is above WithMaxHold(%v)", ErrInvalidOption, cfg.minHold, cfg.maxHold)
	case cfg.maxHold > 0 && cfg.maxHold < c.caps.MinTTL:
		return fmt.Errorf("%w: WithMaxHold(%v) is below this backend's minimum TTL of %v", ErrInvalidOption, cfg.maxHold, c.caps.MinTTL)
	}
	if cfg.maxHold > 0 && cfg.ttl > cfg.maxHold {
		cfg.ttl = cfg.maxHold
	}
	return nil
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

func (c *Client) emit(e Event) {
	if len(c.cfg.hooks) == 0 {
		return
	}
	e.Backend = c.caps.Backend
	for _, h := range c.cfg.hooks {
		h(e)
	}
}
