package bench

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/redlock"
)

// redlockNodes is how many independent redis-servers the Redlock rows use.
const redlockNodes = 5

// newRedlockBackend starts five independent redis-servers: dlock's redlock
// driver against redsync with one pool per server.
func newRedlockBackend(ctx context.Context, t *serverT) (*backend, error) {
	var r *redisNodes
	if err := startBackend(t, func(t *serverT) { r = startRedisBackend(t, redlockNodes) }); err != nil {
		return nil, err
	}
	b := &backend{
		name:       "redlock",
		title:      "Redlock over 5 independent Redis servers",
		version:    "Redis " + redisVersion(ctx, r.srv[0]) + " ×5",
		serverUnit: "Redis commands on all 5 servers (INFO commandstats, including those run inside scripts)",
		counter:    r.counts,
	}
	open := func() (*dlock.Client, func(), error) {
		cs := make([]*redis.Client, len(r.srv))
		for i := range cs {
			cs[i] = r.dlockClient(i)
		}
		c, err := redlock.NewClient(cs, redlock.Options{})
		if err != nil {
			closeRedis(cs)
			return nil, nil, err
		}
		return c, func() { _ = c.Close(); closeRedis(cs) }, nil
	}
	b.subjects = []*subject{
		{id: "dlock", backend: "redlock", name: "dlock", setting: "defaults", role: roleDlock, uncontended: true, hotKey: true,
			contenders: dlockContenders(open)},
		redsyncSubject(r, "redlock", false),
		redsyncSubject(r, "redlock", true),
		redisFloor(r, "redlock"),
	}
	for _, s := range b.subjects {
		s.hold = nil // the held-locks scenario runs on one server
	}
	b.family = &family{open: open, slots: r.redsyncSlots, slotsName: "redsync TryLock"}
	return b, nil
}
