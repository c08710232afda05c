// Package memdlock is an in-process dlock driver: locks shared by the
// goroutines of one process. Use it in tests, examples, and to stand in for a
// real backend in your own tests; it behaves like one (TTL expiry, owner
// tokens, strictly increasing fences, release notifications) without a
// server.
//
// # URLs
//
// Importing the package registers the "mem" scheme with dlock.Open:
//
//	mem://          the process-wide default store
//	mem://NAME      a named store; every Open of the same name shares it
//
// No query parameters are accepted.
package memdlock

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// Scheme is the URL scheme this package registers.
const Scheme = "mem"

func init() {
	dlock.Register(Scheme, driver.URLOpenerFunc(openURL))
}

var stores = struct {
	sync.Mutex
	m map[string]*Store
}{m: map[string]*Store{}}

func openURL(_ context.Context, u *driver.URL) (driver.Locker, error) {
	if err := u.CheckForm("mem://NAME"); err != nil {
		return nil, err
	}
	if err := u.Finish(); err != nil {
		return nil, err
	}
	if u.Path != "" && u.Path != "/" || u.User != nil {
		return nil, fmt.Errorf("%w: mem URL takes only a store name: mem://NAME", driver.ErrInvalidOption)
	}
	stores.Lock()
	defer stores.Unlock()
	s := stores.m[u.Host]
	if s == nil {
		s = NewStore()
		stores.m[u.Host] = s
	}
	return s.Driver(), nil
}

// Store is a set of in-process locks. Clients made from the same Store
// exclude each other, like clients of one server.
type Store struct {
	mu      sync.Mutex
	entries map[string]*entry
	fences  map[string]uint64
	watch   map[string]map[chan struct{}]struct{}
}

type entry struct {
	token    string
	fence    uint64
	expires  time.Time
	metadata string
}

// info is what Inspect reports of a live entry.
func (e *entry) info(now time.Time) driver.Info {
	return driver.Info{Held: true, Fence: e.fence, TTL: e.expires.Sub(now), Metadata: e.metadata, Waiters: -1}
}

// NewStore returns an empty, isolated Store.
func NewStore() *Store {
	return &Store{
		entries: map[string]*entry{},
		fences:  map[string]uint64{},
		watch:   map[string]map[chan struct{}]struct{}{},
	}
}

// NewClient returns a dlock Client over the store.
func (s *Store) NewClient(opts ...dlock.Option) *dlock.Client {
	return dlock.NewClient(s.Driver(), opts...)
}

// Driver returns a new driver.Locker over the store, for drivertest and for
// dlock.NewClient.
func (s *Store) Driver() driver.Locker { return &memDriver{s: s} }

// NewClient returns a dlock Client over a new, isolated Store.
func NewClient(opts ...dlock.Option) *dlock.Client { return NewStore().NewClient(opts...) }

type memDriver struct {
	s      *Store
	mu     sync.Mutex
	closed bool
}

func (d *memDriver) check(ctx context.Context) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return driver.ErrClosed
	}
	return ctx.Err()
}

// live returns the entry for key if its lease has not run out. s.mu held.
func (s *Store) live(key string, now time.Time) *entry {
	e := s.entries[key]
	if e == nil {
		return nil
	}
	if !now.Before(e.expires) {
		delete(s.entries, key)
		return nil
	}
	return e
}

func (d *memDriver) Acquire(ctx context.Context, req driver.Request) (driver.Result, error) {
	if err := d.check(ctx); err != nil {
		return driver.Result{}, err
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if e := s.live(req.Key, now); e != nil {
		if e.token != req.Token {
			return driver.Result{HolderTTL: e.expires.Sub(now)}, nil
		}
		e.expires, e.metadata = now.Add(req.TTL), req.Metadata
		return driver.Result{Acquired: true, Fence: e.fence}, nil
	}
	s.fences[req.Key]++
	e := &entry{token: req.Token, fence: s.fences[req.Key], expires: now.Add(req.TTL), metadata: req.Metadata}
	s.entries[req.Key] = e
	return driver.Result{Acquired: true, Fence: e.fence}, nil
}

func (d *memDriver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	if err := d.check(ctx); err != nil {
		return err
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	e := s.live(key, now)
	if e == nil || e.token != token {
		return driver.ErrNotHeld
	}
	e.expires = now.Add(ttl)
	return nil
}

// RefreshBatch implements driver.BatchRefresher.
func (d *memDriver) RefreshBatch(ctx context.Context, reqs []driver.RefreshRequest) []error {
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		errs[i] = d.Refresh(ctx, r.Key, r.Token, r.TTL)
	}
	return errs
}

func (d *memDriver) Release(ctx context.Context, key, token string) error {
	if err := d.check(ctx); err != nil {
		return err
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.live(key, time.Now())
	if e == nil || e.token != token {
		return driver.ErrNotHeld
	}
	delete(s.entries, key)
	s.notifyLocked(key)
	return nil
}

func (d *memDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	if err := d.check(ctx); err != nil {
		return driver.Info{}, err
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if e := s.live(key, now); e != nil {
		return e.info(now), nil
	}
	return driver.Info{Fence: s.fences[key], Waiters: -1}, nil
}

// List implements driver.Lister.
func (d *memDriver) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	if err := d.check(ctx); err != nil {
		return nil, err
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var out []driver.KeyInfo
	for key := range s.entries {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		if e := s.live(key, now); e != nil {
			out = append(out, driver.KeyInfo{Key: key, Info: e.info(now)})
		}
	}
	slices.SortFunc(out, func(a, b driver.KeyInfo) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// ForceRelease implements driver.ForceReleaser.
func (d *memDriver) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	if err := d.check(ctx); err != nil {
		return driver.Info{}, err
	}
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	e := s.live(key, now)
	if e == nil {
		return driver.Info{Fence: s.fences[key], Waiters: -1}, nil
	}
	delete(s.entries, key)
	s.notifyLocked(key)
	return e.info(now), nil
}

// notifyLocked wakes the watches of key. s.mu held.
func (s *Store) notifyLocked(key string) {
	for ch := range s.watch[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// WatchReleases implements driver.Notifier.
func (d *memDriver) WatchReleases(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if err := d.check(ctx); err != nil {
		return nil, nil, err
	}
	s := d.s
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.watch[key] == nil {
		s.watch[key] = map[chan struct{}]struct{}{}
	}
	s.watch[key][ch] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.watch[key], ch)
			if len(s.watch[key]) == 0 {
				delete(s.watch, key)
			}
			s.mu.Unlock()
		})
	}, nil
}

func (d *memDriver) Capabilities() driver.Capabilities {
	// Expiries are time.Time values, which hold any lease up to the
	// portable maximum.
	return driver.Capabilities{Fencing: true, ReacquireWithToken: true, MaxTTL: driver.MaxTTL}
}

func (d *memDriver) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}
