package redisdlock

import (
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
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
	// grant, at least a second. Default (zero) 30 days. See the package
	// documentation for what it guarantees.
	FenceTTL time.Duration
	// Addr names the server in error messages. Default (empty): taken from
	// the client's options (the address, or the list of addresses), or,
	// for a driver opened from a URL, from the URL's hosts.
	Addr string
}

// engineConfig returns the engine's configuration for o.
func (o Options) engineConfig() redisengine.Config {
	return redisengine.Config{Prefix: o.Prefix, FenceTTL: o.FenceTTL, Addr: o.Addr}
}

// NewDriver returns a driver over a go-redis client the application already
// has: a *redis.Client (single node or Sentinel failover), a
// *redis.ClusterClient, or any other redis.UniversalClient whose commands
// reach one master per key. The driver also implements driver.Notifier,
// driver.BatchRefresher, driver.Lister, driver.ForceReleaser and
// driver.SharedLocker (semaphores and RW locks). It does
// not close rdb; the application does, after closing the dlock Client. A
// nil rdb or Options that are not valid give an error matching
// dlock.ErrInvalidOption.
func NewDriver(rdb redis.UniversalClient, opts Options) (driver.Locker, error) {
	e, err := redisengine.New(rdb, opts.engineConfig())
	if err != nil {
		return nil, err
	}
	return e, nil
}

var _ driver.SharedLocker = (*redisengine.Engine)(nil)

// NewClient returns a dlock Client over a go-redis client the application
// already has; see NewDriver. The Client's Close does not close rdb.
func NewClient(rdb redis.UniversalClient, opts Options, clientOpts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(rdb, opts)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, clientOpts...), nil
}
