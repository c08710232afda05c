package dlockgocron

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/go-co-op/gocron/v2"
)

// ErrNotLeader is what Elector.IsLeader returns (wrapped, with the reason
// when there is one) while this instance is not the leader.
var ErrNotLeader = errors.New("dlockgocron: not the leader")

// Elector is a gocron.Elector over a dlock election: the scheduler of the
// instance whose Elector holds the election's leadership runs the jobs, the
// others skip them. Make one with NewElector; it is safe for concurrent
// use.
type Elector struct {
	e     *dlock.Election
	value string
	opts  []dlock.LockOption

	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	lead    *dlock.Lock // the leadership, nil while not leader
	stopped error       // why campaigning stopped, when it did on its own
	resign  error       // the resigning Unlock's error
}

var _ gocron.Elector = (*Elector)(nil)

// Pauses between campaigns that failed (the backend unreachable, the retry
// strategy given up).
const (
	minCampaignPause = 100 * time.Millisecond
	maxCampaignPause = 5 * time.Second
)

// NewElector makes this instance a candidate of the election name
// (Client.Election) with value as its leader value (see Election.Leader),
// and campaigns in the background until ctx ends or Close is called: it
// campaigns, holds the leadership (a *dlock.Lock, refreshed as any lock)
// while it lasts, and campaigns again after a loss. opts apply to each
// campaign as to Election.Campaign: dlock.WithTTL (how long the crash of
// a leader's process keeps the election without a leader), dlock.WithRetry,
// dlock.WithMaxHold (a term limit, after which the leader campaigns again
// behind the others).
//
// Its first attempt is made before NewElector returns: when the election
// has no leader, this instance is leader at once. An invalid name or
// option, or a closed Client, is returned as an error then; any other
// failure of that attempt (a backend out of reach) leaves the campaign to
// go on in the background.
//
// Only the leader's scheduler runs jobs, and another instance's scheduler
// takes over the moment this leadership ends and the other instance's
// campaign wins; a job run that started before the end is not stopped.
// Pass Leadership().Fence() with a run's writes where the resource can
// refuse a stale term (dlock.FenceGuard).
func NewElector(ctx context.Context, client *dlock.Client, name, value string, opts ...dlock.LockOption) (*Elector, error) {
	opts = append(slices.Clip(opts), dlock.WithMetadata(value))
	lead, err := client.TryLock(ctx, name, opts...)
	switch {
	case err == nil, errors.Is(err, dlock.ErrNotAcquired):
	case errors.Is(err, dlock.ErrInvalidKey), errors.Is(err, dlock.ErrInvalidTTL),
		errors.Is(err, dlock.ErrInvalidOption), errors.Is(err, dlock.ErrUnsupported),
		errors.Is(err, dlock.ErrClosed):
		return nil, fmt.Errorf("dlockgocron: election %q: %w", name, err)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("dlockgocron: election %q: %w", name, ctx.Err())
	}
	cctx, cancel := context.WithCancel(ctx)
	e := &Elector{
		e:      client.Election(name),
		value:  value,
		opts:   opts,
		cancel: cancel,
		done:   make(chan struct{}),
		lead:   lead,
	}
	go e.run(cctx, lead)
	return e, nil
}

// IsLeader implements gocron.Elector: nil while this instance holds the
// election's leadership (its lock's Err is nil), an error matching
// ErrNotLeader otherwise.
func (e *Elector) IsLeader(context.Context) error {
	e.mu.Lock()
	lead, stopped := e.lead, e.stopped
	e.mu.Unlock()
	switch {
	case lead != nil:
		if err := lead.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrNotLeader, err)
		}
		return nil
	case stopped != nil:
		return fmt.Errorf("%w: campaigning stopped: %w", ErrNotLeader, stopped)
	}
	return ErrNotLeader
}

// Leadership returns this instance's leadership, a lock of the election's
// key whose Fence is the term, or nil while it is not the leader.
func (e *Elector) Leadership() *dlock.Lock {
	e.mu.Lock()
	lead := e.lead
	e.mu.Unlock()
	if lead == nil || lead.Err() != nil {
		return nil
	}
	return lead
}

// Close stops campaigning and resigns: IsLeader fails from then on, and
// the election's next candidate is elected at once. It returns the
// resigning Unlock's error (nil when this instance was not leader, or
// lost the leadership at the same moment). It is safe to call more than
// once.
func (e *Elector) Close() error {
	e.cancel()
	<-e.done
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.resign
}

func (e *Elector) setLead(lead *dlock.Lock) {
	e.mu.Lock()
	e.lead = lead
	e.mu.Unlock()
}

func (e *Elector) run(ctx context.Context, lead *dlock.Lock) {
	defer close(e.done)
	pause := minCampaignPause
	for {
		if lead == nil {
			l, err := e.e.Campaign(ctx, e.value, e.opts...)
			switch {
			case err == nil:
				lead, pause = l, minCampaignPause
				e.setLead(lead)
			case ctx.Err() != nil:
				return
			case errors.Is(err, dlock.ErrClosed):
				e.mu.Lock()
				e.stopped = err
				e.mu.Unlock()
				return
			default:
				// The retry strategy gave up, or the backend failed:
				// campaign again after a pause.
				t := time.NewTimer(pause)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
				pause = min(2*pause, maxCampaignPause)
				continue
			}
		}
		select {
		case <-lead.Done():
			e.setLead(nil)
			lead = nil
		case <-ctx.Done():
			// IsLeader fails before the key is freed.
			e.setLead(nil)
			uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := lead.Unlock(uctx)
			cancel()
			if errors.Is(err, dlock.ErrNotHeld) {
				err = nil // lost at the same moment: nothing to resign
			}
			e.mu.Lock()
			e.resign = err
			e.mu.Unlock()
			return
		}
	}
}
