package redisengine

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock/driver"
)

// DefaultFenceTTL is how long a key's fence counter lives after its last
// grant unless Config says otherwise.
const DefaultFenceTTL = 30 * 24 * time.Hour

// MinTTL is the shortest lease the engine takes. Redis keeps expiries in
// milliseconds; TTLs are rounded up to the next millisecond.
const MinTTL = 10 * time.Millisecond

// MaxTTL is the longest lease the engine takes (about 285 years). Redis
// adds a PX or PEXPIRE argument to its clock in milliseconds as a 64-bit
// integer, and the scripts pass TTLs and PTTLs through as integers, so a
// server accepts far longer expiries; the bound is the Go side's: the TTL
// in nanoseconds (time.Duration) and the deadlines computed from it stay
// clear of overflow. MaxTTL is a whole number of milliseconds. The drivers
// declare MinTTL and MaxTTL in their Capabilities, and the portable layer
// refuses a TTL outside them before it reaches the engine.
const MaxTTL = 9_000_000_000 * time.Second

// defaultListBatch is the COUNT of each SCAN that List sends, and the most
// candidates it checks in one pipeline, unless Config says otherwise.
const defaultListBatch = 500

// Config configures an Engine. The zero value gives the defaults.
type Config struct {
	// Prefix goes before every key to make the Redis key of the lock: the
	// lock on "job" is the Redis key Prefix+"job". It must be valid UTF-8;
	// a '{' in it must open a hash tag closed in the prefix. Default none.
	Prefix string
	// FenceTTL is how long a key's fence counter lives after the key's
	// last grant, at least a second. Default DefaultFenceTTL.
	FenceTTL time.Duration
	// Addr names the server in error messages. Default: taken from the
	// client's options (the address, or the list of addresses).
	Addr string
	// OwnsClient makes Close close the go-redis client too (a client the
	// driver opened from a URL). Default false: the caller closes it.
	OwnsClient bool
	// ListBatch is the COUNT of each SCAN that List sends and the most
	// names it checks in one pipeline. Default 500.
	ListBatch int
}

// Engine is dlock's lock engine on one Redis deployment (a server, a
// Sentinel-managed master or a Cluster) through one go-redis client: the
// scripts, the key layout, the shared release subscription and the waiting
// queues. It implements driver.Locker, driver.Notifier,
// driver.BatchRefresher, driver.Lister, driver.ForceReleaser and
// driver.SharedLocker, and makes
// the counted single-server attempts a quorum driver builds on
// (AcquireCounted, GiveBack, RaiseFence, InspectHolder, ListHolders,
// ForceReleaseHolder).
type Engine struct {
	rdb        redis.UniversalClient
	ks         keyspace
	fenceTTLms string
	addr       string
	ownsClient bool
	listBatch  int
	// ctxDeadlines: the client applies context deadlines to its sockets
	// (ContextTimeoutEnabled), so a call cannot outlive ctx's deadline.
	ctxDeadlines bool
	closed       atomic.Bool
	notify       *notifier
	// id names this engine in the keys' waiting queues and in release
	// wake-ups. It is random and says nothing about the owner tokens.
	id string
}

var (
	_ driver.Locker   = (*Engine)(nil)
	_ driver.Notifier = (*Engine)(nil)
)

// New returns an engine over rdb: a *redis.Client (single node or Sentinel
// failover), a *redis.ClusterClient, or any other redis.UniversalClient
// whose commands reach one master per key. It closes rdb only with
// Config.OwnsClient. A nil rdb or a Config that is not valid gives an
// error matching driver.ErrInvalidOption.
func New(rdb redis.UniversalClient, c Config) (*Engine, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil redis client", driver.ErrInvalidOption)
	}
	ks, err := newKeyspace(c.Prefix)
	if err != nil {
		return nil, err
	}
	fenceTTL := c.FenceTTL
	switch {
	case fenceTTL == 0:
		fenceTTL = DefaultFenceTTL
	case fenceTTL < time.Second:
		return nil, fmt.Errorf("%w: redis fence TTL %v is below 1s", driver.ErrInvalidOption, fenceTTL)
	}
	addr := c.Addr
	if addr == "" {
		addr = clientAddr(rdb)
	}
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("redis: waiter id: %w", err)
	}
	e := &Engine{
		rdb:          rdb,
		ks:           ks,
		fenceTTLms:   strconv.FormatInt(millis(fenceTTL), 10),
		addr:         addr,
		ownsClient:   c.OwnsClient,
		listBatch:    cmp.Or(max(c.ListBatch, 0), defaultListBatch),
		ctxDeadlines: contextDeadlines(rdb),
		id:           hex.EncodeToString(id),
	}
	e.notify = newNotifier(e)
	return e, nil
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

// Prefix returns the prefix of the engine's Redis keys.
func (e *Engine) Prefix() string { return e.ks.prefix }

// Keys returns the Redis keys of the lock named key: the lock itself
// (holding the owner token), the fence counter, and the info key (fence,
// token and metadata of the holder). They share one Cluster slot.
func (e *Engine) Keys(key string) (lock, fence, info string) { return e.ks.keys(key) }

// QueueKeys returns the Redis keys of key's waiting queue and of its
// waiters' deadlines, in the slot of Keys.
func (e *Engine) QueueKeys(key string) (queue, waits string) {
	all := e.ks.allKeys(key)
	return all[3], all[4]
}

// SharedKeys returns the Redis keys of key's shared grants, in the slot of
// Keys: the sorted set of their tokens by lease end (ms of the server's
// clock), the hash of their fences and metadata by token, the stored
// limit, and the sorted set of waiting writers' tokens by record end. None
// of them exists while the key has no shared grant and no waiting writer.
func (e *Engine) SharedKeys(key string) (shares, sinfo, slimit, writers string) {
	all := e.ks.allKeys(key)
	return all[kShares], all[kSInfo], all[kSLimit], all[kWriters]
}

// Channel returns the pub/sub channel on which releases of key are
// announced.
func (e *Engine) Channel(key string) string { return e.ks.channel(key) }

// Addr returns the server's address as errors name it.
func (e *Engine) Addr() string { return e.addr }

// ID returns the engine's waiter id, as it appears in waiting queues and
// release messages.
func (e *Engine) ID() string { return e.id }

// Capabilities implements driver.Locker.
func (e *Engine) Capabilities() driver.Capabilities {
	return driver.Capabilities{Backend: "redis", Fencing: true, ReacquireWithToken: true, MinTTL: MinTTL, MaxTTL: MaxTTL}
}

// WatchReleases implements driver.Notifier over one pub/sub connection
// shared by every watch of the engine.
func (e *Engine) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if e.closed.Load() {
		return nil, nil, driver.ErrClosed
	}
	return e.notify.watch(ctx, key, e.ks.channel(key))
}

// Close implements driver.Locker. It takes the client out of every waiting
// queue it may be in (a waiter that gave up, or is still waiting), so that
// no free key is kept for it: it waits up to a second for the replies of
// attempts in flight that may join a queue, then leaves the queues in one
// pipeline; all of that within two seconds, whether or not the server
// answers. It then closes the pub/sub connection, and the go-redis client
// with Config.OwnsClient. Locks still held expire on the server.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	err := e.notify.close()
	if e.ownsClient {
		if cerr := e.rdb.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// run calls script once. It returns when ctx ends even if the client does
// not apply context deadlines to its sockets; a reply that comes later is
// passed to abandoned (when not nil).
func (e *Engine) run(ctx context.Context, s *redis.Script, keys []string, args []any, abandoned func(any, error)) (any, error) {
	return e.runTracked(ctx, s, keys, args, abandoned, nil)
}

// runTracked is run that also calls replied (when not nil) exactly once,
// when the call is over on the client's side: the reply or a transport
// error came, or the script was never sent. That may be after run
// returned, and replied is called before abandoned.
func (e *Engine) runTracked(ctx context.Context, s *redis.Script, keys []string, args []any, abandoned func(any, error), replied func()) (any, error) {
	if replied == nil {
		replied = func() {}
	}
	if e.closed.Load() {
		replied()
		return nil, driver.ErrClosed
	}
	if _, ok := ctx.Deadline(); ctx.Done() == nil || ok && e.ctxDeadlines {
		// The client bounds the call by ctx's deadline itself (or there is
		// none): no goroutine needed.
		v, err := s.Run(ctx, e.rdb, keys, args...).Result()
		replied()
		if err != nil && ctx.Err() != nil && abandoned != nil {
			go abandoned(v, err)
		}
		return v, e.unavailable(ctx, err)
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
		v, err := s.Run(ctx, e.rdb, keys, args...).Result()
		replied()
		ch <- reply{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && ctx.Err() != nil && abandoned != nil {
			// Cut short by ctx: the server may have run the script.
			go abandoned(r.v, r.err)
		}
		return r.v, e.unavailable(ctx, r.err)
	case <-ctx.Done():
		if abandoned != nil {
			go func() {
				r := <-ch
				abandoned(r.v, r.err)
			}()
		}
		return nil, e.unavailable(ctx, ctx.Err())
	}
}

// unavailable wraps the error of a call made under ctx with ErrUnavailable
// and the server's address; a call cancelled by its caller keeps only the
// address. When ctx has ended, or its deadline has passed (a socket
// deadline taken from it fires a moment before ctx says so), the error
// also matches ctx's error, whatever go-redis made of it ("i/o timeout").
// Errors never contain credentials: go-redis does not put them in its
// errors, and the address is host:port only.
func (e *Engine) unavailable(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(dl) {
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%w)", err, cerr)
	}
	switch {
	case errors.Is(err, redis.ErrClosed) && e.closed.Load():
		return driver.ErrClosed
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("redis %s: %w", e.addr, err)
	}
	return fmt.Errorf("%w: redis %s: %w", driver.ErrUnavailable, e.addr, err)
}
