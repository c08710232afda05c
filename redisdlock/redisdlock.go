package redisdlock

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// DefaultPrefix is the prefix put before every lock key unless Options or
// the URL say otherwise: none, so the Redis key of the lock on K is K itself,
// the key redsync, bsm/redislock and hand-written SET NX code use for K.
const DefaultPrefix = ""

// DefaultFenceTTL is how long a key's fence counter lives after its last
// grant unless Options say otherwise.
const DefaultFenceTTL = 30 * 24 * time.Hour

// MinTTL is the shortest lease the driver accepts. Redis keeps expiries in
// milliseconds; TTLs are rounded up to the next millisecond.
const MinTTL = 10 * time.Millisecond

// MaxTTL is the longest lease the driver accepts (about 285 years); a longer
// one is an error matching ErrInvalidTTL. Redis adds a PX or PEXPIRE
// argument to its clock in milliseconds as a 64-bit integer, and the
// scripts pass TTLs and PTTLs through as integers, so a server accepts far
// longer expiries; the bound is the Go side's: the TTL in nanoseconds
// (time.Duration) and the deadlines computed from it stay clear of
// overflow. MaxTTL is a whole number of milliseconds.
const MaxTTL = 9_000_000_000 * time.Second

var (
	//go:embed lua/acquire.lua
	acquireLua string
	//go:embed lua/refresh.lua
	refreshLua string
	//go:embed lua/release.lua
	releaseLua string
	//go:embed lua/inspect.lua
	inspectLua string
	//go:embed lua/fence.lua
	fenceLua string
	//go:embed lua/leave.lua
	leaveLua string
	//go:embed lua/stay.lua
	stayLua string
	//go:embed lua/force.lua
	forceLua string
	// queueLua defines the queue helpers of the scripts it is put before.
	//go:embed lua/queue.lua
	queueLua string

	acquireScript = redis.NewScript(queueLua + acquireLua)
	refreshScript = redis.NewScript(refreshLua)
	releaseScript = redis.NewScript(queueLua + releaseLua)
	inspectScript = redis.NewScript(queueLua + inspectLua)
	fenceScript   = redis.NewScript(fenceLua)
	leaveScript   = redis.NewScript(leaveLua)
	stayScript    = redis.NewScript(queueLua + stayLua)
	forceScript   = redis.NewScript(queueLua + forceLua)
)

// Options configure the driver. The zero value gives the defaults.
type Options struct {
	// Prefix goes before every key to make the Redis key of the lock: the
	// lock on "job" is the Redis key Prefix+"job". It is used as given; the
	// default, empty, makes the Redis key exactly the lock's name, as in
	// redsync, bsm/redislock and hand-written SET NX code, so that locks
	// taken by them and by dlock on the same name exclude each other. A
	// prefix ("app:") keeps dlock's keys apart and lets a Redis ACL scope
	// them. A prefix must be valid UTF-8; a '{' in it must open a hash tag
	// closed in the prefix ("{app}:" puts every lock in one Cluster slot).
	Prefix string
	// FenceTTL is how long a key's fence counter lives after the key's last
	// grant. Default DefaultFenceTTL (30 days). See the package
	// documentation for what it guarantees.
	FenceTTL time.Duration
	// Addr names the server in error messages. Default: taken from the
	// client's options (the address, or the list of addresses).
	Addr string
}

// Driver is the Redis driver.Locker. It also implements driver.Notifier.
// Create one with NewDriver, or with Open and a redis:// URL.
type Driver struct {
	rdb        redis.UniversalClient
	ks         keyspace
	fenceTTLms string
	addr       string
	ownsClient bool
	// ctxDeadlines: the client applies context deadlines to its sockets
	// (ContextTimeoutEnabled), so a call cannot outlive ctx's deadline.
	ctxDeadlines bool
	closed       atomic.Bool
	notify       *notifier
	// id names this driver in the keys' waiting queues and in release
	// wake-ups. It is random and says nothing about the owner tokens.
	id string
}

var (
	_ driver.Locker   = (*Driver)(nil)
	_ driver.Notifier = (*Driver)(nil)
)

// NewDriver returns a driver over a go-redis client the application already
// has: a *redis.Client (single node or Sentinel failover), a
// *redis.ClusterClient, or any other redis.UniversalClient whose commands
// reach one master per key. The driver does not close rdb; the application
// does, after closing the dlock Client. Options that are not valid give an
// error matching ErrInvalidOption.
func NewDriver(rdb redis.UniversalClient, opts Options) (*Driver, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil redis client", driver.ErrInvalidOption)
	}
	ks, err := newKeyspace(opts.Prefix)
	if err != nil {
		return nil, err
	}
	fenceTTL := opts.FenceTTL
	switch {
	case fenceTTL == 0:
		fenceTTL = DefaultFenceTTL
	case fenceTTL < time.Second:
		return nil, fmt.Errorf("%w: redis fence TTL %v is below 1s", driver.ErrInvalidOption, fenceTTL)
	}
	addr := opts.Addr
	if addr == "" {
		addr = clientAddr(rdb)
	}
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("redisdlock: waiter id: %w", err)
	}
	d := &Driver{
		rdb:        rdb,
		ks:         ks,
		fenceTTLms: strconv.FormatInt(millis(fenceTTL), 10),
		addr:       addr,
		id:         hex.EncodeToString(id),
	}
	d.ctxDeadlines = contextDeadlines(rdb)
	d.notify = newNotifier(d)
	return d, nil
}

// NewClient returns a dlock Client over a go-redis client the application
// already has; see NewDriver. The Client's Close does not close rdb.
func NewClient(rdb redis.UniversalClient, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(rdb, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}

// clientAddr names the servers of rdb for error messages.
func clientAddr(rdb redis.UniversalClient) string {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return "cluster " + strings.Join(c.Options().Addrs, ",")
	case *redis.Ring:
		addrs := make([]string, 0, len(c.Options().Addrs))
		for _, a := range c.Options().Addrs {
			addrs = append(addrs, a)
		}
		sort.Strings(addrs)
		return "ring " + strings.Join(addrs, ",")
	}
	return "server"
}

// Prefix returns the prefix of the driver's Redis keys.
func (d *Driver) Prefix() string { return d.ks.prefix }

// Keys returns the Redis keys the driver uses for the lock named key: the
// lock itself (holding the owner token), the fence counter, and the info key
// (fence, token and metadata of the holder). They share one Cluster slot.
func (d *Driver) Keys(key string) (lock, fence, info string) { return d.ks.keys(key) }

// Channel returns the pub/sub channel on which releases of key are
// announced.
func (d *Driver) Channel(key string) string { return d.ks.channel(key) }

// Capabilities implements driver.Locker.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Fencing: true, ReacquireWithToken: true, MinTTL: MinTTL, MaxTTL: MaxTTL}
}

// checkTTL returns an error matching ErrInvalidTTL when ttl is outside
// [MinTTL, MaxTTL].
func checkTTL(ttl time.Duration) error {
	switch {
	case ttl < MinTTL:
		return fmt.Errorf("%w: %v is below the redis minimum of %v", driver.ErrInvalidTTL, ttl, MinTTL)
	case ttl > MaxTTL:
		return fmt.Errorf("%w: %v is above the redis maximum of %v", driver.ErrInvalidTTL, ttl, MaxTTL)
	}
	return nil
}

// pttl converts a PTTL in milliseconds from the server to a duration; a
// key set by another client with an expiry beyond MaxTTL (which no
// time.Duration may be able to hold) counts as MaxTTL.
func pttl(ms int64) time.Duration {
	if ms <= 0 {
		return 0
	}
	if ms >= MaxTTL.Milliseconds() {
		return MaxTTL
	}
	return time.Duration(ms) * time.Millisecond
}

// millis rounds d up to whole milliseconds, so the server-side lease is at
// least d.
func millis(d time.Duration) int64 {
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// Acquire implements driver.Locker with one script call: SET NX PX, the
// fence bump and the info write on success; the holder's PTTL otherwise.
func (d *Driver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	return d.acquire(ctx, req, 0)
}

// acquire makes one attempt; a non-zero attempt makes it a counted attempt
// (see AcquireCounted).
func (d *Driver) acquire(ctx context.Context, req driver.Request, attempt uint64) (driver.Result, error) {
	if err := checkTTL(req.TTL); err != nil {
		return driver.Result{}, err
	}
	args := []any{req.Token, millis(req.TTL), req.Metadata, d.fenceTTLms}
	if attempt != 0 {
		args = append(args, "counted", strconv.FormatUint(attempt, 10))
	}
	// The queue: a client waiting for the key (it watches the key's
	// releases) joins it when this attempt fails; an uncounted attempt
	// finds a free key kept for the first waiter.
	keys := d.ks.allKeys(req.Key)
	qa := d.notify.attempt(d.ks.channel(req.Key), req.Hints.Wait)
	join := "0"
	if qa.w != nil {
		join = "1"
	}
	args = append(args, d.id, join, queueEntryTTLms)
	abandoned := func(v any, err error) {
		// The caller left before the reply. If the attempt was granted,
		// or may have been, give the key back so that nothing is left
		// behind.
		if res, perr := parseAcquire(v); err == nil && (perr != nil || !res.Acquired) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = d.Release(ctx, req.Key, req.Token)
	}
	if attempt != 0 {
		// The caller gives its attempts back itself, by attempt number.
		abandoned = nil
	}
	var replied func()
	if qa.w != nil {
		replied = func() { d.notify.replied(qa) }
	}
	v, err := d.runTracked(ctx, acquireScript, keys, args, abandoned, replied)
	if err != nil {
		if qa.w != nil {
			// The attempt may have joined the queue.
			d.notify.setQueued(qa, true, true)
		}
		return driver.Result{}, err
	}
	res, err := parseAcquire(v)
	if err != nil {
		return driver.Result{}, d.unavailable(err)
	}
	if qa.w != nil && d.notify.setQueued(qa, !res.Acquired, false) {
		res.Queued.Wait = queueKeepEvery
	}
	return res, nil
}

func parseAcquire(v any) (driver.Result, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return driver.Result{}, fmt.Errorf("unexpected acquire reply %v", v)
	}
	granted, ok := a[0].(int64)
	if !ok {
		return driver.Result{}, fmt.Errorf("unexpected acquire reply %v", v)
	}
	if granted == 1 {
		s, ok := a[1].(string)
		fence, err := strconv.ParseUint(s, 10, 64)
		if !ok || err != nil || fence == 0 {
			return driver.Result{}, fmt.Errorf("unexpected fence %v in acquire reply", a[1])
		}
		return driver.Result{Acquired: true, Fence: fence}, nil
	}
	ms, _ := a[1].(int64)
	return driver.Result{HolderTTL: pttl(ms)}, nil
}

// Refresh implements driver.Locker.
func (d *Driver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	lock, _, info := d.ks.keys(key)
	v, err := d.run(ctx, refreshScript, []string{lock, info}, []any{token, millis(ttl)}, nil)
	if err != nil {
		return err
	}
	if n, _ := v.(int64); n != 1 {
		return fmt.Errorf("%w: %q", driver.ErrNotHeld, key)
	}
	return nil
}

// Release implements driver.Locker. On success it publishes a wake-up on
// the key's release channel, in the same script.
func (d *Driver) Release(ctx context.Context, key, token string) error {
	return d.release(ctx, key, token, d.ks.channel(key), 0)
}

// release frees key if token owns it (and, when attempt is not zero, took
// it in that counted attempt) and, unless channel is empty, publishes a
// wake-up on channel.
func (d *Driver) release(ctx context.Context, key, token, channel string, attempt uint64) error {
	all := d.ks.allKeys(key)
	keys := []string{all[0], all[2]}
	args := []any{token, channel}
	if attempt != 0 {
		args = append(args, strconv.FormatUint(attempt, 10))
	} else {
		keys = append(keys, all[3], all[4])
	}
	v, err := d.run(ctx, releaseScript, keys, args, nil)
	if err != nil {
		return err
	}
	if n, _ := v.(int64); n != 1 {
		return fmt.Errorf("%w: %q", driver.ErrNotHeld, key)
	}
	return nil
}

// Inspect implements driver.Locker. For a key held by a client other than
// dlock (a plain SET NX), it reports Held with fence 0 and no metadata.
func (d *Driver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	in, _, err := d.inspect(ctx, key)
	return in, err
}

// inspect reports the state of key and the holder's token ("" when free).
func (d *Driver) inspect(ctx context.Context, key string) (driver.Info, string, error) {
	all := d.ks.allKeys(key)
	v, err := d.run(ctx, inspectScript, []string{all[0], all[2], all[1], all[4]}, nil, nil)
	if err != nil {
		return driver.Info{}, "", err
	}
	in, token, state, err := parseInspect(v)
	if err != nil {
		return driver.Info{}, "", d.unavailable(err)
	}
	in.Held = state == 1
	return in, token, nil
}

// parseInspect reads the reply of inspect.lua or force.lua: the state (the
// first element), and the Info (Held left false) and holder's token of the
// rest.
func parseInspect(v any) (in driver.Info, token string, state int64, err error) {
	a, ok := v.([]any)
	if !ok || len(a) != 6 {
		return driver.Info{}, "", 0, fmt.Errorf("unexpected inspect reply %v", v)
	}
	state, _ = a[0].(int64)
	ms, _ := a[1].(int64)
	fs, _ := a[2].(string)
	meta, _ := a[3].(string)
	token, _ = a[4].(string)
	waiting, _ := a[5].(int64)
	in = driver.Info{Metadata: meta, Waiters: int(waiting), TTL: pttl(ms)}
	in.Fence, _ = strconv.ParseUint(fs, 10, 64)
	return in, token, state, nil
}

// WatchReleases implements driver.Notifier over one pub/sub connection
// shared by every watch of the driver.
func (d *Driver) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if d.closed.Load() {
		return nil, nil, driver.ErrClosed
	}
	return d.notify.watch(ctx, key, d.ks.channel(key))
}

// Close implements driver.Locker. It takes the client out of every waiting
// queue it may be in (a waiter that gave up, or is still waiting), so that
// no free key is kept for it: it waits up to a second for the replies of
// attempts in flight that may join a queue, then leaves the queues in one
// pipeline; all of that within two seconds, whether or not the server
// answers. It then closes the pub/sub connection, and the go-redis client
// when the driver opened it from a URL. Locks still held expire on the
// server.
func (d *Driver) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	err := d.notify.close()
	if d.ownsClient {
		if cerr := d.rdb.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// run calls script once. It returns when ctx ends even if the client does
// not apply context deadlines to its sockets; a reply that comes later is
// passed to abandoned (when not nil).
func (d *Driver) run(ctx context.Context, s *redis.Script, keys []string, args []any, abandoned func(any, error)) (any, error) {
	return d.runTracked(ctx, s, keys, args, abandoned, nil)
}

// runTracked is run that also calls replied (when not nil) exactly once,
// when the call is over on the client's side: the reply or a transport
// error came, or the script was never sent. That may be after run
// returned, and replied is called before abandoned.
func (d *Driver) runTracked(ctx context.Context, s *redis.Script, keys []string, args []any, abandoned func(any, error), replied func()) (any, error) {
	if replied == nil {
		replied = func() {}
	}
	if d.closed.Load() {
		replied()
		return nil, driver.ErrClosed
	}
	if _, ok := ctx.Deadline(); ctx.Done() == nil || ok && d.ctxDeadlines {
		// The client bounds the call by ctx's deadline itself (or there is
		// none): no goroutine needed.
		v, err := s.Run(ctx, d.rdb, keys, args...).Result()
		replied()
		if err != nil && ctx.Err() != nil && abandoned != nil {
			go abandoned(v, err)
		}
		return v, d.unavailable(err)
	}
	if err := ctx.Err(); err != nil {
		replied()
		return nil, err
	}
	type reply struct {
		v   any
		err error
	}
	ch := make(chan reply, 1)
	go func() {
		v, err := s.Run(ctx, d.rdb, keys, args...).Result()
		replied()
		ch <- reply{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && ctx.Err() != nil && abandoned != nil {
			// Cut short by ctx: the server may have run the script.
			go abandoned(r.v, r.err)
		}
		return r.v, d.unavailable(r.err)
	case <-ctx.Done():
		if abandoned != nil {
			go func() {
				r := <-ch
				abandoned(r.v, r.err)
			}()
		}
		return nil, d.unavailable(ctx.Err())
	}
}

// unavailable wraps an error from go-redis with ErrUnavailable and the
// server's address; a call cancelled by its caller keeps only the address.
// Errors never contain credentials: go-redis does not put them in its
// errors, and the address is host:port only.
func (d *Driver) unavailable(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.ErrClosed) && d.closed.Load():
		return driver.ErrClosed
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("redis %s: %w", d.addr, err)
	}
	return fmt.Errorf("%w: redis %s: %w", driver.ErrUnavailable, d.addr, err)
}

// contextDeadlines reports whether rdb applies context deadlines to its
// sockets (go-redis's ContextTimeoutEnabled).
func contextDeadlines(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}
