package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	redsyncgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/dlockotel"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// Peer settings. "defaults" is what a library does when given nothing; the
// tuned setting is the same for every polling peer: exponential backoff
// from 16 ms (bsm/redislock's recommended minimum) doubling to 128 ms,
// retrying until the caller's context ends.
const (
	tunedMin = 16 * time.Millisecond
	tunedMax = 128 * time.Millisecond
	// lockTTL is the lease every library gets in the uncontended and hot-key
	// scenarios: redsync's default expiry.
	lockTTL = 8 * time.Second
)

var tunedSetting = fmt.Sprintf("tuned: exponential backoff %v→%v", tunedMin, tunedMax)

// tunedDelay is the tuned backoff before retry number try (1, 2, ...).
func tunedDelay(try int) time.Duration {
	d := tunedMax
	if try >= 1 && try < 8 {
		d = min(tunedMin<<(try-1), tunedMax)
	}
	return d
}

// cmdCounter is a go-redis hook counting the round trips a client makes: a
// command, or a whole pipeline, is one, whatever the server runs inside
// scripts (the server's own counts are taken apart).
type cmdCounter struct{ n atomic.Int64 }

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// redisNodes is one or more independent redis-servers.
type redisNodes struct {
	srv  []*testserver.Redis
	sent *cmdCounter
}

// peerClient is a go-redis client as a peer's documentation makes one:
// go-redis's defaults.
func (r *redisNodes) peerClient(i int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.srv[i].Addr()})
	c.AddHook(r.sent)
	return c
}

// dlockClient is a go-redis client configured as dlock configures the one
// it makes for a redis:// URL: context deadlines on sockets, go-redis's own
// retries off (dlock retries).
func (r *redisNodes) dlockClient(i int) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:                  r.srv[i].Addr(),
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
		DialerRetries:         1,
	})
	c.AddHook(r.sent)
	return c
}

func (r *redisNodes) peerClients() []*redis.Client {
	cs := make([]*redis.Client, len(r.srv))
	for i := range cs {
		cs[i] = r.peerClient(i)
	}
	return cs
}

func closeRedis(cs []*redis.Client) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// counts sums INFO commandstats over the nodes, less the INFO commands of
// the readings (each reading's INFO shows in the next one).
func (r *redisNodes) counts(ctx context.Context) (counts, error) {
	var total int64
	for _, s := range r.srv {
		out, err := s.Do(ctx, "INFO", "commandstats")
		if err != nil {
			return counts{}, fmt.Errorf("%s: INFO commandstats: %w", s.Addr(), err)
		}
		for _, line := range strings.Split(out, "\n") {
			name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok || !strings.HasPrefix(name, "cmdstat_") {
				continue
			}
			for _, f := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(f, "calls="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					if name == "cmdstat_info" {
						continue // our readings
					}
					total += n
				}
			}
		}
	}
	return counts{server: total, roundTrips: r.sent.n.Load()}, nil
}

func startRedisBackend(t *serverT, nodes int) *redisNodes {
	r := &redisNodes{sent: &cmdCounter{}}
	r.srv = testserver.StartRedisNodes(t, nodes)
	return r
}

func redisVersion(ctx context.Context, s *testserver.Redis) string {
	v, err := s.Info(ctx, "server", "redis_version")
	if err != nil || v == "" {
		return "?"
	}
	return v
}

// newRedisBackend starts one redis-server and lists its subjects.
func newRedisBackend(ctx context.Context, t *serverT) (*backend, error) {
	var r *redisNodes
	if err := startBackend(t, func(t *serverT) { r = startRedisBackend(t, 1) }); err != nil {
		return nil, err
	}
	b := &backend{
		name:       "redis",
		title:      "Redis, one server",
		version:    "Redis " + redisVersion(ctx, r.srv[0]),
		serverUnit: "Redis commands (INFO commandstats, including those run inside scripts)",
		counter:    r.counts,
	}
	b.subjects = []*subject{
		redisDlock(r, false),
		redisDlock(r, true),
		redisDlockNoDeadline(r),
		redisDlockMetrics(r, 1),
		redisDlockMetrics(r, 0.1),
		redsyncSubject(r, "redis", false),
		redsyncSubject(r, "redis", true),
		redislockSubject(r, false),
		redislockSubject(r, true),
		redisFloor(r, "redis"),
		redisFencedFloor(r),
	}
	b.family = &family{open: r.openDlock, slots: r.redsyncSlots, slotsName: "redsync TryLock"}
	return b, nil
}

// openDlock opens a dlock Client over the first server, with its own
// go-redis client.
func (r *redisNodes) openDlock() (*dlock.Client, func(), error) {
	rdb := r.dlockClient(0)
	c, err := redisdlock.NewClient(rdb, redisdlock.Options{})
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return c, func() { _ = c.Close(); _ = rdb.Close() }, nil
}

// redsyncSlots are the hand-written semaphore's slots as redsync mutexes
// (defaults, one pool per node), taken with TryLockContext.
func (r *redisNodes) redsyncSlots(_ context.Context, key string, limit, n int) ([]tryFunc, func(), error) {
	return openN(n, func(int) (tryFunc, func(), error) {
		cs := r.peerClients()
		pools := make([]redsyncredis.Pool, len(cs))
		for i, c := range cs {
			pools[i] = redsyncgoredis.NewPool(c)
		}
		rs := redsync.New(pools...)
		ms := make([]*redsync.Mutex, limit)
		for i := range ms {
			ms[i] = rs.NewMutex(fmt.Sprintf("%s/%d", key, i))
		}
		try := func(ctx context.Context, i int) (func(context.Context) error, bool, error) {
			m := ms[i]
			if err := m.TryLockContext(ctx); err != nil {
				var rerr *redsync.RedisError
				if errors.As(err, &rerr) {
					return nil, false, err
				}
				return nil, false, nil // taken
			}
			return func(ctx context.Context) error {
				ok, err := m.UnlockContext(ctx)
				if err == nil && !ok {
					err = errors.New("redsync: unlock: not held")
				}
				return err
			}, true, nil
		}
		return try, func() { closeRedis(cs) }, nil
	})
}

// redisDlock is dlock over one server, each contender its own Client, or
// with shared all contenders on one Client.
func redisDlock(r *redisNodes, shared bool) *subject {
	s := &subject{id: "dlock", backend: "redis", name: "dlock", setting: "defaults", role: roleDlock, uncontended: !shared, hotKey: true}
	open := r.openDlock
	if shared {
		s.id, s.name = "dlock-shared", "dlock, one Client"
		s.contenders = sharedDlockContenders(open)
	} else {
		s.contenders = dlockContenders(open)
		s.hold = dlockHold(open)
	}
	return s
}

// redisDlockMetrics is dlock's uncontended cycle with dlockotel's metrics
// and traces: a MeterProvider of the OpenTelemetry SDK whose reader nobody
// collects during the run, and a TracerProvider that samples the fraction
// ratio of the traces (each cycle's calls are root spans: a trace each)
// into a batch processor whose exporter drops them, so the cost is the
// recording alone, which a service pays on every lock.
func redisDlockMetrics(r *redisNodes, ratio float64) *subject {
	s := &subject{id: "dlock-otel", backend: "redis", name: "dlock", setting: "defaults, with dlockotel metrics and traces (OpenTelemetry SDK, every span sampled)", role: roleDlock, uncontended: true}
	sampler := sdktrace.AlwaysSample()
	if ratio < 1 {
		s.id = fmt.Sprintf("dlock-otel-%g", ratio)
		s.setting = fmt.Sprintf("defaults, with dlockotel metrics and traces (OpenTelemetry SDK, %g%% of traces sampled)", ratio*100)
		sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(discardSpans{}))
	tr := dlockotel.NewTracing(dlockotel.WithTracerProvider(tp))
	open := func() (*dlock.Client, func(), error) {
		m, err := dlockotel.NewMetrics(dlockotel.WithMeterProvider(mp))
		if err != nil {
			return nil, nil, err
		}
		rdb := r.dlockClient(0)
		c, err := redisdlock.NewClient(rdb, redisdlock.Options{}, m.Option(), tr.Option())
		if err != nil {
			_ = rdb.Close()
			return nil, nil, err
		}
		return c, func() { _ = c.Close(); _ = rdb.Close() }, nil
	}
	s.contenders = dlockContenders(open)
	return s
}

// discardSpans is a span exporter that drops what it is given.
type discardSpans struct{}

func (discardSpans) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardSpans) Shutdown(context.Context) error                             { return nil }

// redisDlockNoDeadline is dlock's uncontended cycle under a context that
// can be cancelled but has no deadline. go-redis bounds a call by a
// context's deadline, not by its cancellation, so dlock then makes each
// call from a goroutine of its own, to return as soon as the context ends;
// the peers do not honour cancellation during a call.
func redisDlockNoDeadline(r *redisNodes) *subject {
	s := redisDlock(r, false)
	s.id, s.setting, s.hotKey, s.hold = "dlock-nodeadline", "defaults; a context with no deadline", false, nil
	contenders := s.contenders
	s.contenders = func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
		locks, closeFn, err := contenders(ctx, key, n)
		for i, lock := range locks {
			locks[i] = func(ctx context.Context) (func(context.Context) error, error) {
				ctx, cancel := noDeadline(ctx)
				defer cancel()
				unlock, err := lock(ctx)
				if err != nil {
					return nil, err
				}
				return func(ctx context.Context) error {
					ctx, cancel := noDeadline(ctx)
					defer cancel()
					return unlock(ctx)
				}, nil
			}
		}
		return locks, closeFn, err
	}
	return s
}

// noDeadline returns a context with ctx's values that can be cancelled
// but has no deadline.
func noDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithCancel(context.WithoutCancel(ctx))
}

// redsyncSubject is go-redsync/redsync v4 over r's nodes (one pool per
// node: with 5 nodes, Redlock).
func redsyncSubject(r *redisNodes, backend string, tuned bool) *subject {
	s := &subject{id: "redsync", backend: backend, name: "redsync", setting: "defaults", role: rolePeer, uncontended: !tuned, hotKey: true}
	var opts []redsync.Option
	if tuned {
		s.id, s.setting = "redsync-tuned", tunedSetting
		opts = []redsync.Option{
			redsync.WithTries(math.MaxInt32),
			redsync.WithRetryDelayFunc(tunedDelay),
		}
	}
	s.contenders = func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
		return openN(n, func(int) (lockFunc, func(), error) {
			cs := r.peerClients()
			pools := make([]redsyncredis.Pool, len(cs))
			for i, c := range cs {
				pools[i] = redsyncgoredis.NewPool(c)
			}
			m := redsync.New(pools...).NewMutex(key, opts...)
			lock := func(ctx context.Context) (func(context.Context) error, error) {
				if err := m.LockContext(ctx); err != nil {
					return nil, err
				}
				return func(ctx context.Context) error {
					ok, err := m.UnlockContext(ctx)
					if err == nil && !ok {
						err = errors.New("redsync: unlock: not held")
					}
					return err
				}, nil
			}
			return lock, func() { closeRedis(cs) }, nil
		})
	}
	if !tuned {
		s.hold = redsyncHold(r)
	}
	return s
}

// redislockSubject is bsm/redislock. Its default is not to retry at all (an
// Obtain on a held key fails at once), which cannot wait for a lock; the
// "defaults" row uses the retry its documentation shows,
// LinearBackoff(100ms).
func redislockSubject(r *redisNodes, tuned bool) *subject {
	s := &subject{id: "redislock", backend: "redis", name: "bsm/redislock", setting: "documented: LinearBackoff(100ms)", role: rolePeer, uncontended: !tuned, hotKey: true}
	strategy := func() redislock.RetryStrategy { return redislock.LinearBackoff(100 * time.Millisecond) }
	if tuned {
		s.id, s.setting = "redislock-tuned", fmt.Sprintf("tuned: ExponentialBackoff(%v, %v)", tunedMin, tunedMax)
		strategy = func() redislock.RetryStrategy { return redislock.ExponentialBackoff(tunedMin, tunedMax) }
	}
	s.contenders = func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
		return openN(n, func(int) (lockFunc, func(), error) {
			c := r.peerClient(0)
			rl := redislock.New(c)
			lock := func(ctx context.Context) (func(context.Context) error, error) {
				l, err := rl.Obtain(ctx, key, lockTTL, &redislock.Options{RetryStrategy: strategy()})
				if err != nil {
					return nil, err
				}
				return l.Release, nil
			}
			return lock, func() { _ = c.Close() }, nil
		})
	}
	if !tuned {
		s.hold = redislockHold(r)
	}
	return s
}

// redisCAD is the compare-and-delete every Redis lock releases with.
var redisCAD = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)

// redisFloor is the bare commands of a Redis lock: SET NX PX, then an
// EVALSHA compare-and-delete, on every node in parallel (one node: one
// round trip each).
func redisFloor(r *redisNodes, backend string) *subject {
	s := &subject{id: "floor", backend: backend, name: "raw floor", setting: "SET NX PX + EVALSHA compare-and-delete", role: roleFloor, uncontended: true}
	s.contenders = floorContenders(r, func(ctx context.Context, c *redis.Client, key, tok string) error {
		ok, err := c.SetNX(ctx, key, tok, lockTTL).Result()
		if err == nil && !ok {
			err = errors.New("SET NX: key held")
		}
		return err
	})
	return s
}

// redisFencedAcquire is SET NX PX and INCR of a fence counter, in one
// script: the least a lock that hands out fencing tokens sends.
var redisFencedAcquire = redis.NewScript(`if redis.call("set", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then return redis.call("incr", KEYS[2]) end return 0`)

// redisFencedFloor is the bare commands of a Redis lock with a fencing
// token: redisFencedAcquire, then the compare-and-delete. It shows how much
// of dlock's distance to the floor a fence alone accounts for; no target
// refers to it.
func redisFencedFloor(r *redisNodes) *subject {
	s := &subject{id: "floor-fenced", backend: "redis", name: "raw floor with a fence", setting: "EVALSHA of SET NX PX + INCR + EVALSHA compare-and-delete", role: roleFloor, uncontended: true}
	ttl := strconv.FormatInt(lockTTL.Milliseconds(), 10)
	s.contenders = floorContenders(r, func(ctx context.Context, c *redis.Client, key, tok string) error {
		fence, err := redisFencedAcquire.Run(ctx, c, []string{key, key + ":fence"}, tok, ttl).Int64()
		if err == nil && fence == 0 {
			err = errors.New("SET NX: key held")
		}
		return err
	})
	return s
}

// floorContenders gives each contender its own clients of r's nodes; a
// contender takes the key with acquire on every node in parallel and
// releases it with the compare-and-delete.
func floorContenders(r *redisNodes, acquire func(ctx context.Context, c *redis.Client, key, tok string) error) func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
	return func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
		return openN(n, func(int) (lockFunc, func(), error) {
			cs := r.peerClients()
			var token atomic.Int64
			lock := func(ctx context.Context) (func(context.Context) error, error) {
				tok := strconv.FormatInt(token.Add(1), 10)
				if err := onAll(cs, func(c *redis.Client) error { return acquire(ctx, c, key, tok) }); err != nil {
					return nil, err
				}
				return func(ctx context.Context) error {
					return onAll(cs, func(c *redis.Client) error {
						n, err := redisCAD.Run(ctx, c, []string{key}, tok).Int()
						if err == nil && n != 1 {
							err = errors.New("compare-and-delete: not held")
						}
						return err
					})
				}, nil
			}
			return lock, func() { closeRedis(cs) }, nil
		})
	}
}

// onAll runs f on every client, in parallel when there are several.
func onAll(cs []*redis.Client, f func(c *redis.Client) error) error {
	if len(cs) == 1 {
		return f(cs[0])
	}
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(c)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// redislockHold holds keys with bsm/redislock and refreshes each lock
// from its own goroutine every TTL/3, as its documentation leaves to the
// application.
func redislockHold(r *redisNodes) func(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error) {
	return func(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error) {
		c := r.peerClient(0)
		rl := redislock.New(c)
		locks := make([]*redislock.Lock, len(keys))
		err := parallel(len(keys), holdWorkers, func(i int) error {
			l, err := rl.Obtain(ctx, keys[i], ttl, nil)
			locks[i] = l
			return err
		})
		h := newLoopHeld(func(ctx context.Context) error { return c.Close() })
		for _, l := range locks {
			if l == nil {
				continue
			}
			h.add(ttl, func(ctx context.Context) error { return l.Refresh(ctx, ttl, nil) }, l.Release)
		}
		if err != nil {
			_ = h.release(ctx)
			return nil, err
		}
		return h, nil
	}
}

// redsyncHold holds keys with redsync mutexes (expiry = ttl), each
// extended from its own goroutine every TTL/3.
func redsyncHold(r *redisNodes) func(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error) {
	return func(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error) {
		cs := r.peerClients()
		pools := make([]redsyncredis.Pool, len(cs))
		for i, c := range cs {
			pools[i] = redsyncgoredis.NewPool(c)
		}
		rs := redsync.New(pools...)
		ms := make([]*redsync.Mutex, len(keys))
		err := parallel(len(keys), holdWorkers, func(i int) error {
			m := rs.NewMutex(keys[i], redsync.WithExpiry(ttl))
			if err := m.LockContext(ctx); err != nil {
				return err
			}
			ms[i] = m
			return nil
		})
		h := newLoopHeld(func(context.Context) error { closeRedis(cs); return nil })
		for _, m := range ms {
			if m == nil {
				continue
			}
			h.add(ttl,
				func(ctx context.Context) error {
					ok, err := m.ExtendContext(ctx)
					if err == nil && !ok {
						err = errors.New("redsync: extend failed")
					}
					return err
				},
				func(ctx context.Context) error { _, err := m.UnlockContext(ctx); return err })
		}
		if err != nil {
			_ = h.release(ctx)
			return nil, err
		}
		return h, nil
	}
}
