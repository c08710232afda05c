package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlock-go/dlock"
)

// The lock family's scenarios: a semaphore and a readers–writer lock, each
// beside what an application builds without them, on every backend.

// Settings of the hand-written semaphore: limit mutex "slots" tried in
// turn with TryLock, and a randomised backoff between rounds.
const (
	slotBackoffMin = time.Millisecond
	slotBackoffMax = 4 * time.Millisecond
)

// slotSetting describes the hand-written semaphore's loop in the report.
var slotSetting = fmt.Sprintf("slots tried in turn from a random one, then a random %v–%v backoff", slotBackoffMin, slotBackoffMax)

// family is what the lock-family scenarios need of a backend.
type family struct {
	// open opens a dlock Client of the backend, as its "dlock" subject
	// does.
	open openClient
	// slots opens n contenders of the hand-written semaphore on key: each
	// its own client of the backend's usual mutex library, trying the
	// slots key/0 … key/limit-1; slotsName names that library.
	slots     func(ctx context.Context, key string, limit, n int) ([]tryFunc, func(), error)
	slotsName string
}

// tryFunc makes one attempt at slot i: ok false (and no error) when the
// slot is held.
type tryFunc func(ctx context.Context, i int) (unlock func(context.Context) error, ok bool, err error)

// slotLock is the hand-written semaphore's acquire: every slot in turn,
// starting from a random one, and a random backoff after a round that
// found them all held.
func slotLock(try tryFunc, limit int) lockFunc {
	return func(ctx context.Context) (func(context.Context) error, error) {
		for {
			first := rand.IntN(limit)
			for k := range limit {
				unlock, ok, err := try(ctx, (first+k)%limit)
				if err != nil {
					return nil, err
				}
				if ok {
					return unlock, nil
				}
			}
			d := slotBackoffMin + rand.N(slotBackoffMax-slotBackoffMin)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
	}
}

// semaphoreLock is Acquire of a permit of key, and its Unlock.
func semaphoreLock(c *dlock.Client, key string, limit int) lockFunc {
	sem := c.Semaphore(key, limit)
	return func(ctx context.Context) (func(context.Context) error, error) {
		l, err := sem.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		return l.Unlock, nil
	}
}

// rwLock is RLock (shared) or Lock of key's RWMutex, and Unlock.
func rwLock(c *dlock.Client, key string, shared bool) lockFunc {
	rw := c.RWMutex(key)
	return func(ctx context.Context) (func(context.Context) error, error) {
		take := rw.Lock
		if shared {
			take = rw.RLock
		}
		l, err := take(ctx)
		if err != nil {
			return nil, err
		}
		return l.Unlock, nil
	}
}

// familyClients opens n dlock Clients, one per contender, and makes a
// lockFunc of each with mk (which gets the contender's index).
func familyClients(open openClient, n int, mk func(c *dlock.Client, i int) lockFunc) ([]lockFunc, func(), error) {
	return openN(n, func(i int) (lockFunc, func(), error) {
		c, closeFn, err := open()
		if err != nil {
			return nil, nil, err
		}
		return mk(c, i), closeFn, nil
	})
}

// Subject ids of the family scenarios.
const (
	idMutex     = "dlock"       // dlock's mutex (Client.Lock)
	idSemaphore = "dlock-sem"   // dlock's Semaphore
	idSlots     = "slots"       // the hand-written semaphore
	idRWMutex   = "dlock-rw"    // dlock's RWMutex
	idOneMutex  = "dlock-1mutx" // the RW workload on one dlock mutex
)

// semUncontendedSubjects are the subjects of the uncontended semaphore
// scenario: dlock's mutex and a permit of a semaphore of limit, on the same
// backend.
func semUncontendedSubjects(b *backend, limit int) []*subject {
	f := b.family
	mutex := &subject{id: idMutex, backend: b.name, name: "dlock mutex", setting: "Client.Lock + Unlock", role: roleDlock}
	mutex.contenders = func(_ context.Context, key string, n int) ([]lockFunc, func(), error) {
		return familyClients(f.open, n, func(c *dlock.Client, _ int) lockFunc { return dlockLock(c, key) })
	}
	sem := &subject{id: idSemaphore, backend: b.name, name: "dlock semaphore", setting: fmt.Sprintf("limit %d: Semaphore.Acquire + Unlock", limit), role: roleDlock}
	sem.contenders = func(_ context.Context, key string, n int) ([]lockFunc, func(), error) {
		return familyClients(f.open, n, func(c *dlock.Client, _ int) lockFunc { return semaphoreLock(c, key, limit) })
	}
	return []*subject{mutex, sem}
}

// semSubjects are the subjects of the contended semaphore scenario:
// dlock's Semaphore and the hand-written slots.
func semSubjects(b *backend, limit int) []*subject {
	f := b.family
	sem := &subject{id: idSemaphore, backend: b.name, name: "dlock semaphore", setting: "Semaphore.Acquire, defaults", role: roleDlock}
	sem.contenders = func(_ context.Context, key string, n int) ([]lockFunc, func(), error) {
		return familyClients(f.open, n, func(c *dlock.Client, _ int) lockFunc { return semaphoreLock(c, key, limit) })
	}
	slots := &subject{id: idSlots, backend: b.name, name: fmt.Sprintf("%d mutex slots (%s)", limit, f.slotsName), setting: slotSetting, role: rolePeer}
	slots.contenders = func(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
		tries, closeFn, err := f.slots(ctx, key, limit, n)
		if err != nil {
			return nil, nil, err
		}
		locks := make([]lockFunc, n)
		for i, try := range tries {
			locks[i] = slotLock(try, limit)
		}
		return locks, closeFn, nil
	}
	return []*subject{sem, slots}
}

// runSemaphore is the contended semaphore scenario for one subject: n
// contenders, limit permits, each holding one for hold in a closed loop.
// More than limit holders at once is an error of the run.
func runSemaphore(ctx context.Context, b *backend, s *subject, key string, limit, n int, window, hold time.Duration) *hotResult {
	res := &hotResult{subject: s, contenders: n, window: window, limit: limit}
	locks, closeFn, err := s.contenders(ctx, key, n)
	if err != nil {
		res.err = err
		return res
	}
	defer closeFn()
	contend(ctx, b, res, locks, hold)
	if res.peak > limit && res.err == nil {
		res.err = fmt.Errorf("ORACLE VIOLATED: %d holders at once with a limit of %d (%d grants over the limit)", res.peak, limit, res.overlaps)
	}
	return res
}

// rwResult is the readers–writer scenario for one subject.
type rwResult struct {
	subject          *subject
	readers, writers int
	window           time.Duration
	// readGrants, writeGrants: sections begun in the window.
	readGrants, writeGrants int
	all                     int // every section, the drain after the window too
	// writerWait, readerWait: from the call to the grant, p50 / p99.
	writerP50, writerP99 time.Duration
	readerP50, readerP99 time.Duration
	// peakReaders is the most readers seen holding at once.
	peakReaders int
	// violations counts grants that found a writer holding, or that gave
	// a writer the lock while anyone else held it.
	violations  int
	serverPerOp float64 // server count per section
	rtPerOp     float64 // round trips per section (Redis), else < 0
	err         error
}

func (r *rwResult) readsPerSec() float64  { return float64(r.readGrants) / r.window.Seconds() }
func (r *rwResult) writesPerSec() float64 { return float64(r.writeGrants) / r.window.Seconds() }
func (r *rwResult) perSec() float64       { return r.readsPerSec() + r.writesPerSec() }

// rwSubjects are dlock's RWMutex and the same workload on one dlock mutex,
// for readers readers and then writers: the first readers contenders a
// subject opens read.
func rwSubjects(b *backend, readers int) []*subject {
	open := b.family.open
	rw := &subject{id: idRWMutex, backend: b.name, name: "dlock RWMutex", setting: "readers RLock, writers Lock", role: roleDlock}
	rw.contenders = func(_ context.Context, key string, n int) ([]lockFunc, func(), error) {
		return familyClients(open, n, func(c *dlock.Client, i int) lockFunc { return rwLock(c, key, i < readers) })
	}
	one := &subject{id: idOneMutex, backend: b.name, name: "one dlock mutex", setting: "everyone Client.Lock (exclusive)", role: rolePeer}
	one.contenders = func(_ context.Context, key string, n int) ([]lockFunc, func(), error) {
		return familyClients(open, n, func(c *dlock.Client, _ int) lockFunc { return dlockLock(c, key) })
	}
	return []*subject{rw, one}
}

// runRW runs readers and writers, each its own dlock Client, on key for
// window: readers in a closed loop holding readHold, writers holding
// writeHold and pausing writerPause between sections. With the RWMutex
// subject readers share the key; with the one-mutex subject everyone takes
// it exclusively.
func runRW(ctx context.Context, b *backend, s *subject, key string, readers, writers int, window, readHold, writeHold, writerPause time.Duration) *rwResult {
	res := &rwResult{subject: s, readers: readers, writers: writers, window: window}
	locks, closeFn, err := s.contenders(ctx, key, readers+writers)
	if err != nil {
		res.err = err
		return res
	}
	defer closeFn()
	for i, lock := range locks {
		unlock, err := lock(ctx)
		if err == nil {
			err = unlock(ctx)
		}
		if err != nil {
			res.err = fmt.Errorf("warm-up of contender %d: %w", i, err)
			return res
		}
	}
	before, err := b.counter(ctx)
	if err != nil {
		res.err = err
		return res
	}
	var (
		mu                   sync.Mutex
		readWaits, writeWait []time.Duration
		readN, writeN, all   int
		firstErr             firstErr
		readersIn, writersIn atomic.Int32
		peak                 atomic.Int32
		violations           atomic.Int64
		wg                   sync.WaitGroup
	)
	lockCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	end := time.Now().Add(window)
	stop := time.AfterFunc(window, cancel)
	defer stop.Stop()
	for i, lock := range locks {
		reader := i < readers
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				called := time.Now()
				unlock, err := lock(lockCtx)
				if err != nil {
					if lockCtx.Err() == nil {
						firstErr.set(fmt.Errorf("contender %d: %w", i, err))
					}
					return
				}
				acquired := time.Now()
				// Each side counts itself in, then looks at the other
				// (sequentially consistent atomics: of two overlapping
				// holders at least one sees the other).
				hold := writeHold
				if reader {
					hold = readHold
					r := readersIn.Add(1)
					if writersIn.Load() != 0 {
						violations.Add(1)
					}
					for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
					}
				} else if writersIn.Add(1) != 1 || readersIn.Load() != 0 {
					violations.Add(1)
				}
				in := acquired.Before(end)
				if in {
					time.Sleep(hold)
				}
				if reader {
					readersIn.Add(-1)
				} else {
					writersIn.Add(-1)
				}
				uctx, ucancel := context.WithTimeout(ctx, 10*time.Second)
				err = unlock(uctx)
				ucancel()
				if err != nil {
					firstErr.set(fmt.Errorf("contender %d: unlock: %w", i, err))
					return
				}
				mu.Lock()
				all++
				if in {
					if reader {
						readN++
						readWaits = append(readWaits, acquired.Sub(called))
					} else {
						writeN++
						writeWait = append(writeWait, acquired.Sub(called))
					}
				}
				mu.Unlock()
				if !reader && writerPause > 0 {
					select {
					case <-lockCtx.Done():
						return
					case <-time.After(writerPause):
					}
				}
			}
		}()
	}
	wg.Wait()
	after, err := b.counter(ctx)
	if err == nil {
		err = firstErr.get()
	}
	if err != nil {
		res.err = err
		return res
	}
	res.readGrants, res.writeGrants, res.all = readN, writeN, all
	res.readerP50, res.readerP99 = percentile(readWaits, 0.50), percentile(readWaits, 0.99)
	res.writerP50, res.writerP99 = percentile(writeWait, 0.50), percentile(writeWait, 0.99)
	res.peakReaders = int(peak.Load())
	res.violations = int(violations.Load())
	delta := after.sub(before)
	res.serverPerOp = perUnit(delta.server, float64(all))
	res.rtPerOp = perUnit(delta.roundTrips, float64(all))
	switch {
	case res.violations > 0:
		res.err = fmt.Errorf("ORACLE VIOLATED: %d grants with a writer and someone else holding at once", res.violations)
	case readN+writeN == 0:
		// (A writer without sections is a result, not a failure: the
		// one-mutex baseline has no writer preference.)
		res.err = fmt.Errorf("no section in the window (readers %d, writers %d)", readN, writeN)
	}
	return res
}
