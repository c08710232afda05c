package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// role says how a subject is compared.
type role int

const (
	roleDlock role = iota // what is measured
	rolePeer              // a library users would pick instead
	roleFloor             // the bare commands a lock needs, no library
)

// lockFunc takes the lock, waiting as the subject waits, and returns the
// function that releases it.
type lockFunc func(ctx context.Context) (unlock func(context.Context) error, err error)

// heldSet is a set of locks held by one client, kept alive by the subject's
// refresh (dlock's auto-refresh, a session's keep-alive, or a hand-written
// loop).
type heldSet interface {
	// lost counts the locks that are no longer held, as far as the client
	// knows.
	lost() int
	// release stops the refreshing and releases every lock.
	release(ctx context.Context) error
}

// subject is one way of locking on one backend: dlock, a peer library with
// a setting, or the raw floor.
type subject struct {
	// id names the subject for lookups in the report: dlock, dlock-shared,
	// redsync, redsync-tuned, redislock, redislock-tuned, mutex, zklock,
	// sqltable, floor.
	id      string
	backend string
	name    string // "dlock", "redsync", ...
	setting string // "defaults", "tuned: ...", "" when it has none
	role    role

	// contenders opens n contenders for key. Each is what one process would
	// have (its own connection, session or pool) unless the subject shares
	// one client on purpose. close releases what they opened.
	contenders func(ctx context.Context, key string, n int) (locks []lockFunc, close func(), err error)

	// hold takes every key with ttl on one client and keeps them until
	// release; nil when the subject is not part of the held-locks scenario.
	hold func(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error)

	// scenarios the subject takes part in.
	uncontended, hotKey bool
}

// label is the subject's name with its setting, for tables.
func (s *subject) label() string {
	if s.setting == "" {
		return s.name
	}
	return s.name + " (" + s.setting + ")"
}

// counts are what a backend's server (or, where it cannot tell, the
// client) counted so far. A field below zero is not measured.
type counts struct {
	// server: commands the server executed (Redis: every command including
	// those run inside scripts; etcd: gRPC requests and stream messages;
	// ZooKeeper: requests received; PostgreSQL: statements the clients sent).
	server int64
	// roundTrips: requests the clients sent (Redis only, counted by a
	// go-redis hook); below zero elsewhere, where server already counts
	// requests.
	roundTrips int64
}

func (c counts) sub(o counts) counts {
	d := counts{server: c.server - o.server, roundTrips: c.roundTrips - o.roundTrips}
	if c.roundTrips < 0 || o.roundTrips < 0 {
		d.roundTrips = -1
	}
	return d
}

// backend is one started server (or set of servers) with its subjects.
type backend struct {
	name    string // "redis", "redlock", "etcd", "zookeeper", "postgres"
	title   string // for headings
	version string
	// serverUnit names what counts.server counts.
	serverUnit string
	subjects   []*subject
	// counter reads the counts; its own request must not count, or must
	// be subtracted.
	counter func(ctx context.Context) (counts, error)
	// family is what the semaphore and readers–writer scenarios need;
	// nil leaves them out.
	family *family
}

// closers runs clean-ups in reverse order, once.
type closers struct {
	mu sync.Mutex
	fs []func()
}

func (c *closers) add(f func()) {
	c.mu.Lock()
	c.fs = append(c.fs, f)
	c.mu.Unlock()
}

func (c *closers) close() {
	c.mu.Lock()
	fs := c.fs
	c.fs = nil
	c.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// parallel runs f(i) for i in [0, n) on up to workers goroutines and returns
// the first error.
func parallel(n, workers int, f func(i int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// openN opens n things with open, closing those already open when one fails.
func openN[T any](n int, open func(i int) (T, func(), error)) ([]T, func(), error) {
	var cl closers
	out := make([]T, n)
	for i := range out {
		v, c, err := open(i)
		if err != nil {
			cl.close()
			return nil, nil, fmt.Errorf("contender %d: %w", i, err)
		}
		out[i] = v
		cl.add(c)
	}
	return out, cl.close, nil
}
