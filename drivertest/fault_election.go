package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

// Leader election (dlock.Election) under the faults of RunFaultTests: never
// two valid leaders, terms strictly increasing, the deposed leader's term
// refused by a fenced resource.

// testElectionLeaderPaused: a child process is leader (auto-refresh) and is
// paused with SIGSTOP halfway through a lease; a candidate here is elected
// no sooner than the paused leader's validity deadline, with a higher term;
// the child, resumed, reports its leadership lost and never a new deadline;
// a fenced resource takes the new term and refuses the deposed one.
func testElectionLeaderPaused(t *testing.T, f *faults) {
	f.electionLeaderGone(holderPaused)
}

// testElectionLeaderKilled is ElectionLeaderPaused with the child killed
// (SIGKILL): the candidate is elected within the lease plus 1 s of the kill.
func testElectionLeaderKilled(t *testing.T, f *faults) {
	f.electionLeaderGone(holderKilled)
}

func (f *faults) electionLeaderGone(how holderGone) {
	c := f.client()
	name := f.key("election")
	// Where the lease is a session (ZooKeeper), the harness's URL gives
	// the child a session of about 2 s, which is its MaxTTL.
	ttl := ttlWithin(c, 2*time.Second)
	var lead *dlock.Lock
	deposed := f.testHolderGone(holderSpec{Key: name, TTL: ttl, Election: true}, how, func(ctx context.Context) (*dlock.Lock, error) {
		l, err := c.Election(name).Campaign(ctx, "parent")
		lead = l
		return l, err
	})
	if f.t.Failed() || lead == nil {
		return
	}
	f.fencedByTerm(lead.Fence(), deposed)
}

// fencedByTerm checks that a fenced resource takes a write of the new
// leader's term and refuses one of the deposed leader's after it.
func (f *faults) fencedByTerm(term, deposed uint64) {
	f.t.Helper()
	res := &resource{checked: true}
	if err := res.write(term, 1); err != nil {
		f.t.Errorf("the new leader's write (term %d): %v", term, err)
	}
	if err := res.write(deposed, 2); !errors.Is(err, dlock.ErrStaleFence) {
		f.t.Errorf("the deposed leader's write (term %d after %d) = %v, want ErrStaleFence", deposed, term, err)
	}
	if got := res.read(); got != 1 {
		f.t.Errorf("value = %d, want 1 (the new leader's write kept)", got)
	}
}

// election is a candidate's outcome in the fault scenarios: its
// leadership, when it got it, and whether the previous leader's Done had
// closed by then.
type election struct {
	l        *dlock.Lock
	err      error
	at       time.Time
	prevDone bool
}

// campaignAfter campaigns on c in the background, retrying 20 ms apart for
// up to 30 s (also while the backend is unavailable), and reports whether
// prev's leadership had ended when this one began.
func (f *faults) campaignAfter(c *dlock.Client, name string, prev *dlock.Lock) <-chan election {
	got := make(chan election, 1)
	go func() {
		ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
		defer cancel()
		for {
			l, err := c.Election(name).Campaign(ctx, "next", dlock.WithRetry(dlock.LinearBackoff(20*time.Millisecond)))
			if err == nil {
				got <- election{l: l, at: time.Now(), prevDone: isDone(prev)}
				return
			}
			if !errors.Is(err, dlock.ErrUnavailable) || ctx.Err() != nil {
				got <- election{err: err}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return got
}

// wantSuccessor waits for got and checks that the candidate was elected
// after prev's leadership ended (Done closed; unless prev resigned, Err
// matching ErrLost and its validity deadline passed) with a higher term.
func (f *faults) wantSuccessor(got <-chan election, prev *dlock.Lock, resigned bool, when string) *dlock.Lock {
	t := f.t
	t.Helper()
	var e election
	select {
	case e = <-got:
	case <-time.After(40 * time.Second):
		t.Fatalf("no candidate elected within 40 s %s", when)
	}
	if e.err != nil {
		t.Fatalf("Campaign %s: %v", when, e.err)
	}
	if !e.prevDone {
		t.Errorf("a candidate was elected %s before the leader's Done closed: two leaders", when)
	}
	if dl := prev.Deadline(); !resigned && e.at.Before(dl) {
		t.Errorf("a candidate was elected %s %v before the leader's validity deadline: two valid leaders", when, dl.Sub(e.at))
	}
	if err := prev.Err(); !resigned && !errors.Is(err, dlock.ErrLost) {
		t.Errorf("Err of the leader %s = %v, want ErrLost", when, err)
	}
	if e.l.Fence() <= prev.Fence() {
		t.Errorf("term %s = %d, want above the previous leader's %d", when, e.l.Fence(), prev.Fence())
	}
	return e.l
}

// testElectionBlackhole: the leader (TTL 1 s, auto-refresh) campaigns
// through the proxy, and a candidate reaching the server directly waits;
// when the proxy stops forwarding, the candidate is elected only after the
// leader's Done closed with ErrLost and its validity deadline passed, with
// a higher term, which a fenced resource prefers. After the partition
// heals the cut-off client is elected again, with a higher term still.
func testElectionBlackhole(t *testing.T, f *faults) {
	h := faultHarness[BlackholeHarness](f)
	a, b := f.proxiedClient(h), f.client()
	name := f.key("election")
	lead := f.elected(f.campaign(a.Election(name), "a", dlock.WithTTL(ttlWithin(a, time.Second))), "a")
	next := f.campaignAfter(b, name, lead)
	select {
	case e := <-next:
		t.Fatalf("a candidate was elected while the leader leads: %+v", e)
	case <-time.After(100 * time.Millisecond):
	}
	heal := h.Blackhole(t)
	l2 := f.wantSuccessor(next, lead, false, "after the leader was cut off")
	f.fencedByTerm(l2.Fence(), lead.Fence())
	heal()
	again := f.campaignAfter(a, name, l2)
	f.unlock(l2) // resign
	l3 := f.wantSuccessor(again, l2, true, "after the partition healed and the leader resigned")
	f.eventually("Unlock after the partition healed", func() error { return l3.Unlock(f.ctx) })
}

// testElectionRestart: the server is killed while a leader (TTL 1 s) holds;
// its Done closes with ErrLost, and a candidate campaigning across the
// outage and the restart is elected only after that, no sooner than the
// lost leader's validity deadline, with a higher term (the counter
// survives). A third candidate then follows on a resign, higher again.
func testElectionRestart(t *testing.T, f *faults) {
	h := faultHarness[RestartHarness](f)
	a, b, c := f.client(), f.client(), f.client()
	name := f.key("election")
	lead := f.elected(f.campaign(a.Election(name), "a", dlock.WithTTL(ttlWithin(a, time.Second))), "a")
	next := f.campaignAfter(b, name, lead)
	h.Kill(t)
	f.wantLost(lead, "after the server went away")
	h.Restart(t)
	l2 := f.wantSuccessor(next, lead, false, "after the restart")
	third := f.campaignAfter(c, name, l2)
	select {
	case e := <-third:
		t.Fatalf("a third candidate was elected while the second leads: %+v", e)
	case <-time.After(100 * time.Millisecond):
	}
	f.eventually("resign after the restart", func() error { return l2.Unlock(f.ctx) })
	l3 := f.wantSuccessor(third, l2, true, "after the second leader resigned")
	f.eventually("Unlock", func() error { return l3.Unlock(f.ctx) })
}
