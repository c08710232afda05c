package dlockgocron_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/dlockgocron"
	"github.com/dlock-go/dlock/memdlock"
	"github.com/go-co-op/gocron/v2"
	"github.com/google/uuid"
)

// Two instances (here two Clients of one in-memory store; in production
// one Client each, over a shared backend) schedule the same job; the min
// hold keeps the key for the period, so one of them runs it and the other
// skips.
func ExampleNewLocker() {
	store := memdlock.NewStore()
	ran, skipped := make(chan string, 2), make(chan string, 2)
	for _, host := range []string{"host-a", "host-b"} {
		client := store.NewClient()
		defer client.Close()
		locker := dlockgocron.NewLocker(client,
			dlockgocron.WithKeyPrefix("jobs/"),
			// A little less than the period: see NewLocker.
			dlockgocron.WithLockOptions(dlock.WithMinHold(50*time.Minute)))
		s, err := gocron.NewScheduler(gocron.WithDistributedLocker(locker))
		if err != nil {
			panic(err)
		}
		defer s.Shutdown()
		_, err = s.NewJob(gocron.DurationJob(time.Hour),
			gocron.NewTask(func() { ran <- host }),
			gocron.WithName("hourly-sync"),
			gocron.WithStartAt(gocron.WithStartImmediately()),
			gocron.WithEventListeners(gocron.AfterLockError(func(uuid.UUID, string, error) { skipped <- host })))
		if err != nil {
			panic(err)
		}
		s.Start()
	}
	<-ran
	<-skipped
	fmt.Println("one run, one skip")
	// Output: one run, one skip
}

// The first candidate of an empty election is leader at once; only its
// scheduler runs jobs. Closing its Elector hands the leadership over.
func ExampleNewElector() {
	ctx := context.Background()
	store := memdlock.NewStore()
	a, b := store.NewClient(), store.NewClient()
	defer a.Close()
	defer b.Close()
	ea, err := dlockgocron.NewElector(ctx, a, "billing-scheduler", "host-a")
	if err != nil {
		panic(err)
	}
	eb, err := dlockgocron.NewElector(ctx, b, "billing-scheduler", "host-b")
	if err != nil {
		panic(err)
	}
	defer eb.Close()
	s, err := gocron.NewScheduler(gocron.WithDistributedElector(eb))
	if err != nil {
		panic(err)
	}
	defer s.Shutdown()
	fmt.Println("a leads:", ea.IsLeader(ctx) == nil, "b leads:", eb.IsLeader(ctx) == nil)
	_ = ea.Close()
	for eb.IsLeader(ctx) != nil {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("b leads:", eb.IsLeader(ctx) == nil)
	// Output:
	// a leads: true b leads: false
	// b leads: true
}
