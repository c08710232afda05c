package dlockgocron_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/dlockgocron"
	"github.com/dlock-go/dlock/memdlock"
	"github.com/dlock-go/dlock/sqlitedlock"
	"github.com/go-co-op/gocron/v2"
	"github.com/google/uuid"
)

// hosts returns two Clients over one backend: the same memdlock Store, or
// the same SQLite file.
func hosts(t *testing.T, backend string) (a, b *dlock.Client) {
	t.Helper()
	switch backend {
	case "memory":
		s := memdlock.NewStore()
		a, b = s.NewClient(), s.NewClient()
	case "sqlite":
		path := filepath.Join(t.TempDir(), "locks.db")
		var err error
		if a, err = sqlitedlock.Open(context.Background(), path, sqlitedlock.Options{}); err != nil {
			t.Fatal(err)
		}
		if b, err = sqlitedlock.Open(context.Background(), path, sqlitedlock.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	return a, b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// period returns the second a job run belongs to: the cron fires at each
// second's start, so the nearest second, whether the scheduler's timer
// fired a little early or the run started late.
func period() time.Time { return time.Now().Round(time.Second) }

// TestLockerOncePerPeriod runs a job every second (a cron with seconds, so
// both schedulers fire at the same instant) on two schedulers over one
// backend and checks that each period's run happens once: the instance
// that takes the key runs the job, the other's Lock fails with
// ErrNotAcquired, and the min hold keeps the key through the period.
func TestLockerOncePerPeriod(t *testing.T) {
	for _, backend := range []string{"memory", "sqlite"} {
		t.Run(backend, func(t *testing.T) {
			a, b := hosts(t, backend)
			var mu sync.Mutex
			runs := map[time.Time]int{}
			skips := map[time.Time]int{}
			var badErr error
			stopping := false // the schedulers shut down: their jobs' context ends
			start := time.Now()
			var scheds []gocron.Scheduler
			for _, c := range []*dlock.Client{a, b} {
				l := dlockgocron.NewLocker(c, dlockgocron.WithKeyPrefix("jobs/"),
					dlockgocron.WithLockOptions(dlock.WithMinHold(500*time.Millisecond)))
				s, err := gocron.NewScheduler(gocron.WithDistributedLocker(l))
				if err != nil {
					t.Fatal(err)
				}
				_, err = s.NewJob(gocron.CronJob("* * * * * *", true),
					gocron.NewTask(func() {
						mu.Lock()
						runs[period()]++
						mu.Unlock()
					}),
					gocron.WithName("tick"),
					gocron.WithEventListeners(gocron.AfterLockError(func(_ uuid.UUID, _ string, err error) {
						mu.Lock()
						defer mu.Unlock()
						// A Lock in flight when the scheduler shuts down
						// ends with the job's context.
						if !errors.Is(err, dlock.ErrNotAcquired) && !(stopping && errors.Is(err, context.Canceled)) {
							badErr = err
						}
						skips[period()]++
					})))
				if err != nil {
					t.Fatal(err)
				}
				scheds = append(scheds, s)
			}
			for _, s := range scheds {
				s.Start()
			}
			first := start.Truncate(time.Second).Add(time.Second)
			waitFor(t, "3 full periods", func() bool {
				return time.Now().After(first.Add(4 * time.Second))
			})
			stop := time.Now()
			mu.Lock()
			stopping = true
			mu.Unlock()
			for _, s := range scheds {
				if err := s.Shutdown(); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if badErr != nil {
				t.Fatalf("lock error not matching ErrNotAcquired: %v", badErr)
			}
			for p, n := range runs {
				if n > 1 {
					t.Errorf("period %v: %d runs, want at most 1", p.Format(time.TimeOnly), n)
				}
			}
			full := 0
			for p := first.Add(time.Second); p.Add(time.Second).Before(stop); p = p.Add(time.Second) {
				full++
				if runs[p] != 1 || skips[p] != 1 {
					t.Errorf("period %v: %d runs and %d skips, want 1 and 1", p.Format(time.TimeOnly), runs[p], skips[p])
				}
			}
			if full < 2 {
				t.Fatalf("only %d full periods observed", full)
			}
		})
	}
}

// TestLockerKeyAndRelease checks the key (prefix and job name), that a
// held key fails Lock with ErrNotAcquired, and that Unlock frees it.
func TestLockerKeyAndRelease(t *testing.T) {
	ctx := context.Background()
	s := memdlock.NewStore()
	a, b := s.NewClient(), s.NewClient()
	defer a.Close()
	defer b.Close()
	la := dlockgocron.NewLocker(a, dlockgocron.WithKeyPrefix("p/"))
	lb := dlockgocron.NewLocker(b, dlockgocron.WithKeyPrefix("p/"))
	lk, err := la.Lock(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	if in, err := a.Inspect(ctx, "p/job"); err != nil || !in.Held {
		t.Fatalf("Inspect(p/job) = %+v, %v; want held", in, err)
	}
	if _, err := lb.Lock(ctx, "job"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("second Lock: %v, want ErrNotAcquired", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel() // gocron's job context may have ended: Unlock still releases
	if err := lk.Unlock(cctx); err != nil {
		t.Fatal(err)
	}
	lk2, err := lb.Lock(ctx, "job")
	if err != nil {
		t.Fatalf("Lock after Unlock: %v", err)
	}
	_ = lk2.Unlock(ctx)
}

// TestElector checks that only the leader's scheduler runs the job, and
// that after the leader's Elector is closed the other takes over.
func TestElector(t *testing.T) {
	for _, backend := range []string{"memory", "sqlite"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			a, b := hosts(t, backend)
			ea, err := dlockgocron.NewElector(ctx, a, "sched", "host-a", dlock.WithTTL(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer ea.Close()
			eb, err := dlockgocron.NewElector(ctx, b, "sched", "host-b", dlock.WithTTL(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer eb.Close()
			if err := ea.IsLeader(ctx); err != nil {
				t.Fatalf("first candidate: IsLeader = %v, want nil", err)
			}
			if err := eb.IsLeader(ctx); !errors.Is(err, dlockgocron.ErrNotLeader) {
				t.Fatalf("second candidate: IsLeader = %v, want ErrNotLeader", err)
			}
			var mu sync.Mutex
			var log []string
			count := func(host string) int {
				mu.Lock()
				defer mu.Unlock()
				n := 0
				for _, h := range log {
					if h == host {
						n++
					}
				}
				return n
			}
			for _, h := range []struct {
				name string
				e    *dlockgocron.Elector
			}{{"a", ea}, {"b", eb}} {
				s, err := gocron.NewScheduler(gocron.WithDistributedElector(h.e))
				if err != nil {
					t.Fatal(err)
				}
				defer s.Shutdown()
				if _, err := s.NewJob(gocron.DurationJob(50*time.Millisecond), gocron.NewTask(func() {
					mu.Lock()
					log = append(log, h.name)
					mu.Unlock()
				})); err != nil {
					t.Fatal(err)
				}
				s.Start()
			}
			waitFor(t, "3 runs on the leader", func() bool { return count("a") >= 3 })
			if n := count("b"); n != 0 {
				t.Fatalf("the other instance ran %d times while not leader", n)
			}
			if err := ea.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := ea.IsLeader(ctx); !errors.Is(err, dlockgocron.ErrNotLeader) {
				t.Fatalf("closed Elector: IsLeader = %v", err)
			}
			waitFor(t, "the other instance to lead", func() bool { return eb.IsLeader(ctx) == nil })
			waitFor(t, "3 runs on the new leader", func() bool { return count("b") >= 3 })
			mu.Lock()
			defer mu.Unlock()
			seenB := false
			for i, h := range log {
				if h == "b" {
					seenB = true
				} else if seenB {
					t.Fatalf("run %d on the old leader after the new one ran: %v", i, log)
				}
			}
		})
	}
}

// TestElectorCampaignsAgain checks that a leader whose leadership is
// taken away (ForceUnlock) campaigns again and leads a new term.
func TestElectorCampaignsAgain(t *testing.T) {
	ctx := context.Background()
	c := memdlock.NewClient()
	defer c.Close()
	e, err := dlockgocron.NewElector(ctx, c, "sched", "host-a", dlock.WithTTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	first := e.Leadership()
	if first == nil {
		t.Fatal("not leader of an empty election")
	}
	if _, err := c.ForceUnlock(ctx, "sched"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new term", func() bool {
		l := e.Leadership()
		return l != nil && l.Fence() > first.Fence()
	})
	if err := e.IsLeader(ctx); err != nil {
		t.Fatalf("IsLeader after the new term: %v", err)
	}
}

// TestNewElectorInvalid checks that an invalid name is refused at once.
func TestNewElectorInvalid(t *testing.T) {
	c := memdlock.NewClient()
	defer c.Close()
	if _, err := dlockgocron.NewElector(context.Background(), c, "", "v"); !errors.Is(err, dlock.ErrInvalidKey) {
		t.Fatalf("NewElector(\"\") = %v, want ErrInvalidKey", err)
	}
}
