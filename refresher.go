package dlock

import (
	"context"
	"sync"
	"time"

	"github.com/dlock-go/dlock/driver"
)

// maxBatch bounds the locks refreshed in one RefreshBatch call.
const maxBatch = 1000

// batchRefresher refreshes all auto-refreshed locks of a client whose driver
// implements driver.BatchRefresher. A lock is due TTL/3 after its last
// refresh; when the earliest lock is due, every lock due within TTL/6 more
// joins the batch, so locks taken at different moments fall into step and
// many held locks cost a few round trips per interval, not one each.
type batchRefresher struct {
	c    *Client
	d    driver.BatchRefresher
	poke chan struct{}

	mu      sync.Mutex
	due     map[*Lock]dueAt
	started bool
	// wake is the earliest due time the run loop saw in its last collect
	// (zero: none), when it next looks at the locks on its own. A new lock
	// due later needs no poke, so taking a lock does not wake the loop
	// each time; one taken while the loop is busy is seen by its next
	// collect.
	wake time.Time
}

// dueAt is when a lock wants its next refresh. A retry after a failed
// refresh waits its full delay; a regular refresh may come early to join a
// batch.
type dueAt struct {
	at    time.Time
	retry bool
}

func newBatchRefresher(c *Client, d driver.BatchRefresher) *batchRefresher {
	return &batchRefresher{c: c, d: d, poke: make(chan struct{}, 1), due: map[*Lock]dueAt{}}
}

func (b *batchRefresher) add(l *Lock) {
	at := time.Now().Add(l.currentTTL() / 3)
	b.mu.Lock()
	b.due[l] = dueAt{at: at}
	if !b.started {
		b.started = true
		go b.run()
	}
	poke := b.wake.IsZero() || at.Before(b.wake)
	b.mu.Unlock()
	if poke {
		select {
		case b.poke <- struct{}{}:
		default:
		}
	}
}

// remove drops a lock that ended.
func (b *batchRefresher) remove(l *Lock) {
	b.mu.Lock()
	delete(b.due, l)
	b.mu.Unlock()
}

func (b *batchRefresher) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		batch, next := b.collect()
		if len(batch) > 0 {
			// A round's batches go out together, so the last of many
			// does not start near its locks' deadlines.
			var wg sync.WaitGroup
			for len(batch) > 0 {
				n := min(len(batch), maxBatch)
				wg.Add(1)
				go func(part []*Lock) {
					defer wg.Done()
					b.refresh(part)
				}(batch[:n])
				batch = batch[n:]
			}
			wg.Wait()
			continue // collect again: new due times, and locks that came due meanwhile
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-b.c.closeCtx.Done():
			return
		case <-b.poke:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// collect returns the locks to refresh now and the earliest due time of the
// others, dropping locks that ended. A batch forms only when some lock is
// due; then every lock due within TTL/6 more joins it.
func (b *batchRefresher) collect() (batch []*Lock, next time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	anyDue := false
	for l, due := range b.due {
		select {
		case <-l.stop:
			delete(b.due, l)
			continue
		default:
		}
		if !due.at.After(now) {
			anyDue = true
		}
		early := l.currentTTL() / 6
		if due.retry {
			early = 0
		}
		if !due.at.After(now.Add(early)) {
			batch = append(batch, l)
		}
		if due.at.After(now) && (next.IsZero() || due.at.Before(next)) {
			next = due.at
		}
	}
	b.wake = next
	if !anyDue {
		return nil, next
	}
	return batch, next
}

func (b *batchRefresher) refresh(locks []*Lock) {
	reqs := make([]driver.RefreshRequest, 0, len(locks))
	live := locks[:0]
	var deadline time.Time
	for _, l := range locks {
		if l.beginRefresh() != nil {
			continue
		}
		ttl, ok := l.autoTTL()
		if !ok {
			b.remove(l) // its expiry timer ends it at its deadline
			continue
		}
		reqs = append(reqs, driver.RefreshRequest{Key: l.key, Token: l.token, TTL: ttl})
		live = append(live, l)
		if d := l.Deadline(); deadline.IsZero() || d.Before(deadline) {
			deadline = d
		}
	}
	// Locks that could not begin have ended; collect drops them.
	if len(reqs) == 0 {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	sent := time.Now()
	errs := b.d.RefreshBatch(ctx, reqs)
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, l := range live {
		var err error
		if i < len(errs) {
			err = errs[i]
		} else {
			err = driver.ErrUnavailable // a driver that broke the contract
		}
		ttl := reqs[i].TTL
		switch ferr := l.finishRefresh(ctx, sent, ttl, err); {
		case ferr == nil:
			b.due[l] = dueAt{at: sent.Add(ttl / 3)}
		case l.Err() != nil:
			delete(b.due, l)
		default:
			b.due[l] = dueAt{at: time.Now().Add(max(ttl/20, 5*time.Millisecond)), retry: true}
		}
	}
}
