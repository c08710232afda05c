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
	"cmp"
	"context"
	"fmt"
	"maps"
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
// exclude each other, like clients of one server. It grants shared leases
// too (driver.SharedLocker), for semaphores and RW locks.
type Store struct {
	mu      sync.Mutex
	entries map[string]*entry // exclusive holders
	shared  map[string]*sharedKey
	fences  map[string]uint64
	watch   map[string]map[chan struct{}]struct{}
}

// sharedKey is a key's shared grants, their limit and its waiting writers.
type sharedKey struct {
	grants  map[string]*entry // by token
	limit   int
	writers map[string]time.Time // token: when the record lapses
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
		shared:  map[string]*sharedKey{},
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

var (
	_ driver.SharedLocker = (*memDriver)(nil)
	_ driver.MultiLocker  = (*memDriver)(nil)
)

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

// liveShared returns key's shared state with lapsed grants and writer
// records dropped, or nil when nothing of it is left. s.mu held.
func (s *Store) liveShared(key string, now time.Time) *sharedKey {
	sk := s.shared[key]
	if sk == nil {
		return nil
	}
	for t, e := range sk.grants {
		if !now.Before(e.expires) {
			delete(sk.grants, t)
		}
	}
	for t, until := range sk.writers {
		if !now.Before(until) {
			delete(sk.writers, t)
		}
	}
	if len(sk.grants) == 0 && len(sk.writers) == 0 {
		delete(s.shared, key)
		return nil
	}
	return sk
}

// soonest returns the shortest remaining lease of sk's grants, or zero.
func (sk *sharedKey) soonest(now time.Time) time.Duration {
	var d time.Duration
	for _, e := range sk.grants {
		if left := e.expires.Sub(now); d == 0 || left < d {
			d = left
		}
	}
	return d
}

// info is what Inspect reports of a key with shared grants: the newest
// grant's fence and metadata, the longest TTL.
func (sk *sharedKey) info(now time.Time) (driver.Info, bool) {
	var newest *entry
	var ttl time.Duration
	for _, e := range sk.grants {
		if newest == nil || e.fence > newest.fence {
			newest = e
		}
		ttl = max(ttl, e.expires.Sub(now))
	}
	if newest == nil {
		return driver.Info{}, false
	}
	return driver.Info{Held: true, Fence: newest.fence, TTL: ttl, Metadata: newest.metadata, Waiters: -1}, true
}

// begin checks that d is open and ctx live, and locks the store: the
// caller unlocks s.mu. now is the time of the call.
func (d *memDriver) begin(ctx context.Context) (s *Store, now time.Time, err error) {
	if err := d.check(ctx); err != nil {
		return nil, time.Time{}, err
	}
	d.s.mu.Lock()
	return d.s, time.Now(), nil
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
	s, now, err := d.begin(ctx)
	if err != nil {
		return driver.Result{}, err
	}
	defer s.mu.Unlock()
	return s.acquireLocked(req, now), nil
}

// AcquireMany implements driver.MultiLocker: the store's lock makes the
// step atomic.
func (d *memDriver) AcquireMany(ctx context.Context, reqs []driver.Request) ([]driver.Result, error) {
	s, now, err := d.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	res := make([]driver.Result, len(reqs))
	refused := false
	for i, req := range reqs {
		if e := s.live(req.Key, now); e != nil && e.token != req.Token {
			res[i].HolderTTL, refused = e.expires.Sub(now), true
		} else if sk := s.liveShared(req.Key, now); sk != nil && len(sk.grants) > 0 {
			res[i].HolderTTL, refused = sk.soonest(now), true
		}
	}
	if refused {
		return res, nil
	}
	for i, req := range reqs {
		req.Hints = driver.Hints{}
		res[i] = s.acquireLocked(req, now)
	}
	return res, nil
}

// acquireLocked is one exclusive attempt. s.mu held.
func (s *Store) acquireLocked(req driver.Request, now time.Time) driver.Result {
	if e := s.live(req.Key, now); e != nil {
		if e.token != req.Token {
			return driver.Result{HolderTTL: e.expires.Sub(now)}
		}
		e.expires, e.metadata = now.Add(req.TTL), req.Metadata
		return driver.Result{Acquired: true, Fence: e.fence}
	}
	if sk := s.liveShared(req.Key, now); sk != nil {
		if len(sk.grants) > 0 {
			res := driver.Result{HolderTTL: sk.soonest(now)}
			if req.Hints.Wait {
				sk.writers[req.Token] = now.Add(req.TTL)
				res.WriterWaiting = true
			}
			return res
		}
		delete(sk.writers, req.Token)
	}
	s.fences[req.Key]++
	e := &entry{token: req.Token, fence: s.fences[req.Key], expires: now.Add(req.TTL), metadata: req.Metadata}
	s.entries[req.Key] = e
	return driver.Result{Acquired: true, Fence: e.fence}
}

func (d *memDriver) Refresh(ctx context.Context, key, token string, ttl time.Duration) error {
	s, now, err := d.begin(ctx)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	e := s.grant(key, token, now)
	if e == nil {
		return driver.ErrNotHeld
	}
	e.expires = now.Add(ttl)
	return nil
}

// grant returns token's live grant of key, exclusive or shared. s.mu held.
func (s *Store) grant(key, token string, now time.Time) *entry {
	if e := s.live(key, now); e != nil {
		if e.token == token {
			return e
		}
		return nil
	}
	if sk := s.liveShared(key, now); sk != nil {
		return sk.grants[token]
	}
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
	s, now, err := d.begin(ctx)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if e := s.live(key, now); e != nil && e.token == token {
		delete(s.entries, key)
		s.notifyLocked(key)
		return nil
	}
	sk := s.liveShared(key, now)
	if sk == nil {
		return driver.ErrNotHeld
	}
	_, writer := sk.writers[token]
	delete(sk.writers, token)
	_, held := sk.grants[token]
	delete(sk.grants, token)
	s.liveShared(key, now) // drops what is left empty
	if writer || held {
		s.notifyLocked(key) // readers held back by the writer may go
	}
	if !held {
		return driver.ErrNotHeld
	}
	return nil
}

// AcquireShared implements driver.SharedLocker.
func (d *memDriver) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	s, now, err := d.begin(ctx)
	if err != nil {
		return driver.Result{}, err
	}
	defer s.mu.Unlock()
	if e := s.live(req.Key, now); e != nil {
		return driver.Result{HolderTTL: e.expires.Sub(now)}, nil
	}
	sk := s.liveShared(req.Key, now)
	if sk == nil {
		sk = &sharedKey{grants: map[string]*entry{}, writers: map[string]time.Time{}, limit: req.Limit}
		s.shared[req.Key] = sk
	}
	if len(sk.grants) > 0 && sk.limit != req.Limit {
		return driver.Result{}, fmt.Errorf("%w: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, req.Key, sk.limit, req.Limit)
	}
	sk.limit = req.Limit
	if e := sk.grants[req.Token]; e != nil {
		e.expires, e.metadata = now.Add(req.TTL), req.Metadata
		return driver.Result{Acquired: true, Fence: e.fence}, nil
	}
	if len(sk.writers) > 0 || (req.Limit > 0 && len(sk.grants) >= req.Limit) {
		res := driver.Result{HolderTTL: sk.soonest(now)}
		for _, until := range sk.writers {
			if res.HolderTTL == 0 {
				res.HolderTTL = until.Sub(now)
			}
		}
		s.liveShared(req.Key, now)
		return res, nil
	}
	s.fences[req.Key]++
	e := &entry{token: req.Token, fence: s.fences[req.Key], expires: now.Add(req.TTL), metadata: req.Metadata}
	sk.grants[req.Token] = e
	return driver.Result{Acquired: true, Fence: e.fence}, nil
}

// Holders implements driver.SharedLocker.
func (d *memDriver) Holders(ctx context.Context, key string) (driver.Holders, error) {
	s, now, err := d.begin(ctx)
	if err != nil {
		return driver.Holders{}, err
	}
	defer s.mu.Unlock()
	var h driver.Holders
	if e := s.live(key, now); e != nil {
		h.Holders = []driver.Holder{{Fence: e.fence, TTL: e.expires.Sub(now), Metadata: e.metadata}}
	}
	if sk := s.liveShared(key, now); sk != nil {
		h.WritersWaiting = len(sk.writers)
		if len(sk.grants) > 0 {
			h.Limit = sk.limit
		}
		for _, e := range sk.grants {
			h.Holders = append(h.Holders, driver.Holder{Shared: true, Fence: e.fence, TTL: e.expires.Sub(now), Metadata: e.metadata})
		}
	}
	slices.SortFunc(h.Holders, func(a, b driver.Holder) int { return cmp.Compare(a.Fence, b.Fence) })
	return h, nil
}

func (d *memDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	s, now, err := d.begin(ctx)
	if err != nil {
		return driver.Info{}, err
	}
	defer s.mu.Unlock()
	if in, ok := s.infoLocked(key, now); ok {
		return in, nil
	}
	return driver.Info{Fence: s.fences[key], Waiters: -1}, nil
}

// infoLocked is what Inspect reports of a held key. s.mu held.
func (s *Store) infoLocked(key string, now time.Time) (driver.Info, bool) {
	if e := s.live(key, now); e != nil {
		return e.info(now), true
	}
	if sk := s.liveShared(key, now); sk != nil {
		return sk.info(now)
	}
	return driver.Info{}, false
}

// List implements driver.Lister.
func (d *memDriver) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	s, now, err := d.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var out []driver.KeyInfo
	keys := slices.Collect(maps.Keys(s.entries))
	for key := range s.shared {
		keys = append(keys, key)
	}
	for _, key := range keys {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		if in, ok := s.infoLocked(key, now); ok {
			out = append(out, driver.KeyInfo{Key: key, Info: in})
		}
	}
	slices.SortFunc(out, func(a, b driver.KeyInfo) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// ForceRelease implements driver.ForceReleaser.
func (d *memDriver) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	s, now, err := d.begin(ctx)
	if err != nil {
		return driver.Info{}, err
	}
	defer s.mu.Unlock()
	in, ok := s.infoLocked(key, now)
	if !ok {
		delete(s.shared, key) // waiting writers
		return driver.Info{Fence: s.fences[key], Waiters: -1}, nil
	}
	delete(s.entries, key)
	delete(s.shared, key)
	s.notifyLocked(key)
	return in, nil
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
	return driver.Capabilities{Backend: "memory", Fencing: true, ReacquireWithToken: true, MaxTTL: driver.MaxTTL}
}

func (d *memDriver) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}
