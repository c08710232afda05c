package drivertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

// Leader election (dlock.Election) over the driver.

// campaign runs e.Campaign(value) in the background and returns its
// outcome's channel.
func (s *suite) campaign(e *dlock.Election, value string, opts ...dlock.LockOption) <-chan campaignResult {
	got := make(chan campaignResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		l, err := e.Campaign(ctx, value, opts...)
		got <- campaignResult{l, err}
	}()
	return got
}

type campaignResult struct {
	l   *dlock.Lock
	err error
}

// elected waits for a campaign's leadership.
func (s *suite) elected(got <-chan campaignResult, who string) *dlock.Lock {
	s.t.Helper()
	select {
	case r := <-got:
		if r.err != nil {
			s.t.Fatalf("Campaign of %s: %v", who, r.err)
		}
		return r.l
	case <-time.After(40 * time.Second):
		s.t.Fatalf("Campaign of %s did not return within 40 s", who)
		return nil
	}
}

// wantLeader fails the test unless e's leader is value with fence.
func (s *suite) wantLeader(e *dlock.Election, value string, fence uint64) {
	s.t.Helper()
	l, err := e.Leader(s.ctx)
	if err != nil || !l.Held || l.Value != value || l.Fence != fence {
		s.t.Errorf("Leader() = %+v, %v; want %q with term %d", l, err, value, fence)
	}
}

// testElectionTerms: candidates on three clients take turns as leader,
// one at a time, each term above the one before; Leader reports each with
// its value; a resign hands over to the waiting candidate, and once the
// last resigns there is no leader.
func testElectionTerms(t *testing.T, s *suite) {
	name := s.key("election")
	var prev uint64
	first := s.elected(s.campaign(s.client().Election(name), "a"), "a")
	s.wantLeader(s.client().Election(name), "a", first.Fence())
	lead, who := first, "a"
	for _, next := range []string{"b", "c"} {
		waiting := s.campaign(s.client().Election(name), next)
		select {
		case r := <-waiting:
			t.Fatalf("%s elected while %s leads: %+v", next, who, r)
		case <-time.After(100 * time.Millisecond):
		}
		prev = lead.Fence()
		s.unlock(lead) // resign
		lead, who = s.elected(waiting, next), next
		if lead.Fence() <= prev {
			t.Errorf("term of %s = %d, want above the previous term %d", next, lead.Fence(), prev)
		}
		s.wantLeader(s.client().Election(name), next, lead.Fence())
	}
	s.unlock(lead)
	if l, err := s.client().Election(name).Leader(s.ctx); err != nil || l.Held {
		t.Errorf("Leader() after the last resign = %+v, %v; want none", l, err)
	}
}

// testElectionProclaim: the leader changes its value without a new term;
// a deposed leader cannot. Skipped where the backend cannot (ErrUnsupported).
func testElectionProclaim(t *testing.T, s *suite) {
	name := s.key("proclaim")
	e := s.client().Election(name)
	lead := s.elected(s.campaign(e, "host-a:8080"), "a")
	err := e.Proclaim(s.ctx, lead, "host-a:9090")
	if errors.Is(err, dlock.ErrUnsupported) {
		t.Skipf("Proclaim: %v", err)
	}
	if err != nil {
		t.Fatalf("Proclaim: %v", err)
	}
	s.wantLeader(s.client().Election(name), "host-a:9090", lead.Fence())
	if err := lead.Err(); err != nil {
		t.Errorf("leadership after Proclaim: %v", err)
	}
	s.unlock(lead)
	if err := e.Proclaim(s.ctx, lead, "late"); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Proclaim after resigning = %v, want ErrNotHeld", err)
	}
	other := s.elected(s.campaign(s.client().Election(name), "b"), "b")
	if err := e.Proclaim(s.ctx, lead, "deposed"); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Proclaim by a deposed leader = %v, want ErrNotHeld", err)
	}
	s.wantLeader(e, "b", other.Fence())
	s.unlock(other)
}

// testElectionObserve: an observer sees no leader first, then every term
// of 50, in term order, once each, with the value each leader campaigned
// with (and a proclaimed value in the third term), and no leader at the
// end. Five candidates on clients of their own keep campaigning, so a
// resign hands the election straight to a waiting one; each leader stays
// until the observer has reported it.
//
// One more kind of leader may be reported between two terms: the grant of
// an attempt whose outcome its candidate never learned (a transient error,
// such as an etcd leader change under load), which the client released in
// the background while the candidate retried. The observer is right to
// report it: the key was held. The test allows it only for a candidate
// still campaigning whose client logged the retry, with a term between the
// terms around it.
func testElectionObserve(t *testing.T, s *suite) {
	const (
		terms      = 50
		candidates = 5
	)
	name := s.key("observe")
	ctx, cancel := context.WithTimeout(s.ctx, 80*time.Second)
	defer cancel()
	// Where notifications do not reach other clients (LocalNotifier), the
	// observer reads every 50 ms and the candidates retry every 20 ms:
	// each term waits for a poll, not for a notification.
	var (
		observeOpts  []dlock.ObserveOption
		campaignOpts []dlock.LockOption
	)
	if s.localNotifications() {
		observeOpts = append(observeOpts, dlock.WithObserveInterval(50*time.Millisecond))
		campaignOpts = append(campaignOpts, dlock.WithRetry(dlock.LinearBackoff(20*time.Millisecond)))
	}
	obs := s.client().Election(name).Observe(ctx, observeOpts...)
	var (
		last dlock.Leader
		seen bool
	)
	next := func(what string) dlock.Leader {
		t.Helper()
		select {
		case l, ok := <-obs:
			if !ok {
				t.Fatalf("Observe closed before %s", what)
			}
			if seen && l == last {
				t.Fatalf("observed %+v twice in a row, waiting for %s", l, what)
			}
			last, seen = l, true
			return l
		case <-time.After(15 * time.Second):
			t.Fatalf("Observe did not report %s within 15 s", what)
			return dlock.Leader{}
		}
	}
	if l := next("the start"); l.Held {
		t.Fatalf("first observed = %+v, want no leader", l)
	}
	type won struct {
		slot  int
		value string
		lead  *dlock.Lock
	}
	wins := make(chan won, candidates)
	cctx, stopCampaigns := context.WithCancel(ctx)
	defer stopCampaigns()
	elections := make([]*dlock.Election, candidates)
	logs := make([]*logBuffer, candidates)
	pending := make(map[string]int) // campaigning value -> slot
	campaign := func(slot, n int) {
		value := fmt.Sprintf("leader-%d", n)
		pending[value] = slot
		go func() {
			l, err := elections[slot].Campaign(cctx, value, campaignOpts...)
			if err != nil {
				if cctx.Err() == nil {
					t.Errorf("Campaign(%s): %v", value, err)
				}
				return
			}
			wins <- won{slot, value, l}
		}()
	}
	for i := range candidates {
		logs[i] = new(logBuffer)
		c := s.client(dlock.WithLogger(slog.New(slog.NewTextHandler(logs[i], nil))))
		elections[i] = c.Election(name)
		campaign(i, i)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, l := range logs {
				if out := l.String(); out != "" {
					t.Logf("candidate slot %d logged:\n%s", i, out)
				}
			}
		}
	})
	retried := make([]int, candidates) // retries each slot's strays used up
	started := candidates
	var prev uint64
	for term := range terms {

		var w won
		select {
		case w = <-wins:
		case <-time.After(30 * time.Second):
			t.Fatalf("term %d: no candidate elected within 30 s", term)
		}
		// The observer may report no leader between two terms, but never
		// another leader: that would be a term missed, repeated or out
		// of order.
		delete(pending, w.value)
		got := next(w.value)
		for {
			if !got.Held {
				got = next(w.value)
				continue
			}
			slot, campaigning := pending[got.Value]
			// The observer can see the grant before the candidate has
			// met its error.
			if !campaigning || got.Fence <= prev || got.Fence >= w.lead.Fence() ||
				!logs[slot].await(retryMessage, retried[slot]+1, 10*time.Second) {
				break
			}
			retried[slot]++
			t.Logf("term %d: observed %+v, the grant of an attempt its candidate retried", term, got)
			got = next(w.value)
		}
		if got.Value != w.value || got.Fence != w.lead.Fence() || got.Fence <= prev {
			t.Fatalf("term %d: observed %+v, want %q with term %d above %d", term, got, w.value, w.lead.Fence(), prev)
		}
		prev = got.Fence
		if term == 2 {
			err := elections[w.slot].Proclaim(s.ctx, w.lead, w.value+"-again")
			if err == nil {
				if got := next("a proclaimed value"); got.Value != w.value+"-again" || got.Fence != w.lead.Fence() {
					t.Fatalf("observed %+v after Proclaim, want %q with term %d", got, w.value+"-again", w.lead.Fence())
				}
			} else if !errors.Is(err, dlock.ErrUnsupported) {
				t.Fatalf("Proclaim: %v", err)
			}
		}
		s.unlock(w.lead) // resign: a waiting candidate is elected
		if started < terms {
			campaign(w.slot, started)
			started++
		}
	}
	if got := next("the last resign"); got.Held {
		t.Fatalf("observed %+v after the last resign, want no leader", got)
	}
	cancel()
	for l := range obs {
		t.Errorf("observed %+v after the changes ended, want nothing more", l)
	}
}

// retryMessage is what a client logs when an attempt with an unknown
// outcome is retried while waiting.
const retryMessage = "attempt failed while waiting; retrying"

// logBuffer is a client's log, written by many goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// await reports whether the log contains msg n times, waiting up to d.
func (l *logBuffer) await(msg string, n int, d time.Duration) bool {
	for end := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if strings.Count(l.String(), msg) >= n {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// testElectionLead: Lead runs fn while leader; when the leadership is lost
// (freed by force, where the driver can), fn's context ends with a cause
// matching ErrLost and Lead campaigns again and runs fn once more; fn's
// return ends Lead with its error, resigned.
func testElectionLead(t *testing.T, s *suite) {
	name := s.key("lead")
	c := s.client()
	e := c.Election(name)
	force := s.implements(func(d driver.Locker) bool { _, ok := d.(driver.ForceReleaser); return ok })
	ttl := ttlWithin(c, time.Second)
	ctx, cancel := context.WithTimeout(s.ctx, 60*time.Second)
	defer cancel()
	runs := 0
	done := errors.New("done")
	err := e.Lead(ctx, "worker", func(lctx context.Context) error {
		runs++
		l, err := e.Leader(lctx)
		if err != nil || !l.Held || l.Value != "worker" {
			t.Errorf("run %d: Leader() = %+v, %v; want worker", runs, l, err)
		}
		if runs == 1 && force {
			if _, err := s.client().ForceUnlock(s.ctx, name); err != nil {
				t.Errorf("ForceUnlock: %v", err)
				return err
			}
			select {
			case <-lctx.Done():
				if !errors.Is(context.Cause(lctx), dlock.ErrLost) {
					t.Errorf("fn's ctx cause after the loss = %v, want ErrLost", context.Cause(lctx))
				}
				return lctx.Err()
			case <-time.After(ttl + 10*time.Second):
				t.Error("fn's ctx not cancelled after the leadership was freed")
				return done
			}
		}
		return done
	}, dlock.WithTTL(ttl))
	if !errors.Is(err, done) {
		t.Errorf("Lead = %v, want fn's error", err)
	}
	if want := map[bool]int{true: 2, false: 1}[force]; runs != want {
		t.Errorf("fn ran %d times, want %d", runs, want)
	}
	if l, err := e.Leader(s.ctx); err != nil || l.Held {
		t.Errorf("Leader() after Lead returned = %+v, %v; want none (resigned)", l, err)
	}
	if err := e.Lead(s.ctx, "x", nil); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("Lead with a nil fn = %v, want ErrInvalidOption", err)
	}
}

// testElectionResignHandOff: a candidate that retries only every minute,
// waiting behind a leader whose lease is 20 s (or the backend's longest),
// is elected within a hand-off of the leader's resign: within 10 s, so
// neither its backoff nor the lease's end, but the release's notification
// or the backend's queue, elects it. Where notifications do not reach
// other clients (LocalNotifier), the lease is 3 s and the candidate is
// elected within it: the lease it last saw bounds its wait.
func testElectionResignHandOff(t *testing.T, s *suite) {
	name := s.key("resign")
	a, b := s.client(), s.client()
	ttl, within := ttlWithin(a, 20*time.Second), 10*time.Second
	if s.localNotifications() {
		ttl = ttlWithin(a, 3*time.Second)
		within = ttl + 2*time.Second
	}
	lead := s.elected(s.campaign(a.Election(name), "a", dlock.WithTTL(ttl)), "a")
	slow := dlock.RetryFunc(func(int) time.Duration { return time.Minute })
	waiting := s.campaign(b.Election(name), "b", dlock.WithRetry(slow))
	select {
	case r := <-waiting:
		t.Fatalf("b elected while a leads: %+v", r)
	case <-time.After(300 * time.Millisecond): // b tried once and waits
	}
	resigned := time.Now()
	s.unlock(lead)
	select {
	case r := <-waiting:
		took := time.Since(resigned)
		if r.err != nil {
			t.Fatalf("Campaign of b: %v", r.err)
		}
		if took > within {
			t.Errorf("b elected %v after the resign, want within %v", took.Round(time.Millisecond), within)
		}
		if r.l.Fence() <= lead.Fence() {
			t.Errorf("b's term %d, want above a's %d", r.l.Fence(), lead.Fence())
		}
		s.wantLeader(a.Election(name), "b", r.l.Fence())
		s.unlock(r.l)
	case <-time.After(within + 5*time.Second):
		t.Fatalf("b not elected within %v of the resign (it retries every minute; the lease was %v)", within+5*time.Second, ttl)
	}
}
