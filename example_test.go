package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlock-go/dlock"
	_ "github.com/dlock-go/dlock/memdlock" // registers mem://
)

func Example() {
	ctx := context.Background()
	client, err := dlock.Open(ctx, "mem://example")
	if err != nil {
		panic(err)
	}
	defer client.Close()

	lock, err := client.Lock(ctx, "invoice/42", dlock.WithTTL(10*time.Second))
	if err != nil {
		panic(err)
	}
	fmt.Println("holding", lock.Key(), "with fence", lock.Fence())

	// A second owner cannot take it meanwhile.
	_, err = client.TryLock(ctx, "invoice/42")
	fmt.Println("second owner:", errors.Is(err, dlock.ErrNotAcquired))

	if err := lock.Unlock(ctx); err != nil {
		panic(err)
	}
	// Output:
	// holding invoice/42 with fence 1
	// second owner: true
}

func ExampleClient_Do() {
	ctx := context.Background()
	client, err := dlock.Open(ctx, "mem://example-do")
	if err != nil {
		panic(err)
	}
	defer client.Close()

	err = client.Do(ctx, "nightly-report", func(ctx context.Context) error {
		// ctx is cancelled the moment the lock is lost.
		fmt.Println("generating the report")
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// generating the report
	// err: <nil>
}

func ExampleFenceGuard() {
	var guard dlock.FenceGuard
	// The owner with fence 8 wrote first; a stale owner with fence 7, which
	// paused past its lease, writes afterwards and is rejected.
	fmt.Println(guard.Admit("account/1", 8))
	err := guard.Admit("account/1", 7)
	fmt.Println(errors.Is(err, dlock.ErrStaleFence))
	// Output:
	// <nil>
	// true
}

func ExampleExponentialBackoff() {
	ctx := context.Background()
	client, err := dlock.Open(ctx, "mem://example-retry")
	if err != nil {
		panic(err)
	}
	defer client.Close()
	held, _ := client.TryLock(ctx, "job")

	// Give up after three attempts instead of waiting for ctx.
	retry := dlock.LimitRetry(dlock.ExponentialBackoff(time.Millisecond, 10*time.Millisecond), 3)
	_, err = client.Lock(ctx, "job", dlock.WithRetry(retry))
	fmt.Println(errors.Is(err, dlock.ErrNotAcquired))
	_ = held.Unlock(ctx)
	// Output:
	// true
}

func ExampleClient_Semaphore() {
	ctx := context.Background()
	client, err := dlock.Open(ctx, "mem://example-semaphore")
	if err != nil {
		panic(err)
	}
	defer client.Close()

	// At most 2 workers call the payment API at once.
	sem := client.Semaphore("payments-api", 2)
	p1, _ := sem.Acquire(ctx, dlock.WithTTL(10*time.Second))
	p2, _ := sem.Acquire(ctx, dlock.WithTTL(10*time.Second))
	_, err = sem.TryAcquire(ctx)
	fmt.Println("third permit:", errors.Is(err, dlock.ErrNotAcquired))
	n, _ := sem.Holders(ctx)
	fmt.Println("permits out:", n, "fences:", p1.Fence(), p2.Fence())

	// A Semaphore of another size on the same key is an error, not an
	// oversubscribed key.
	_, err = client.Semaphore("payments-api", 5).TryAcquire(ctx)
	fmt.Println("other size:", errors.Is(err, dlock.ErrLimitMismatch))

	_ = p1.Unlock(ctx)
	_ = p2.Unlock(ctx)
	// Output:
	// third permit: true
	// permits out: 2 fences: 1 2
	// other size: true
}

func ExampleClient_RWMutex() {
	ctx := context.Background()
	client, err := dlock.Open(ctx, "mem://example-rwmutex")
	if err != nil {
		panic(err)
	}
	defer client.Close()

	rw := client.RWMutex("config")
	r1, _ := rw.RLock(ctx)
	r2, _ := rw.RLock(ctx) // readers share the key
	_, err = rw.TryLock(ctx)
	fmt.Println("writer while two read:", errors.Is(err, dlock.ErrNotAcquired))
	_ = r1.Unlock(ctx)
	_ = r2.Unlock(ctx)

	w, err := rw.Lock(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("writer's fence:", w.Fence())
	_ = w.Unlock(ctx)
	// Output:
	// writer while two read: true
	// writer's fence: 3
}

func ExampleClient_LockMany() {
	ctx := context.Background()
	client, err := dlock.Open(ctx, "mem://example-lockmany")
	if err != nil {
		panic(err)
	}
	defer client.Close()

	// Both accounts or neither; another transfer locking them in the other
	// order cannot deadlock with this one.
	set, err := client.LockMany(ctx, []string{"acct/2", "acct/1"}, dlock.WithTTL(10*time.Second))
	if err != nil {
		panic(err)
	}
	for _, l := range set.Locks() {
		fmt.Println(l.Key(), "fence", l.Fence())
	}
	if err := set.Unlock(ctx); err != nil {
		panic(err)
	}
	// Output:
	// acct/2 fence 1
	// acct/1 fence 1
}

// A job that every instance schedules runs once per period: the instance
// that takes the lock runs it, and WithMinHold keeps the key held for the
// period even when the job ends at once, so that an instance whose
// scheduler fires a little later skips it too. WithMaxHold caps a job that
// hangs.
func ExampleWithMinHold() {
	ctx := context.Background()
	client, err := dlock.Open(ctx, "mem://example-jobs")
	if err != nil {
		panic(err)
	}
	defer client.Close()

	runOnce := func(instance string) {
		l, err := client.TryLock(ctx, "hourly-sync",
			dlock.WithMinHold(500*time.Millisecond), dlock.WithMaxHold(time.Minute))
		if errors.Is(err, dlock.ErrNotAcquired) {
			fmt.Println(instance, "skips: this period's run is taken")
			return
		}
		if err != nil {
			panic(err)
		}
		fmt.Println(instance, "runs the job")
		_ = l.Unlock(ctx) // the key stays held until the min hold is over
	}
	runOnce("host-a")
	runOnce("host-b") // fires a moment later
	// Output:
	// host-a runs the job
	// host-b skips: this period's run is taken
}

// One candidate leads at a time; each term has a fence above the last, so
// that a resource can refuse a deposed leader's late writes. Unlock
// resigns, and the next candidate is elected at once.
func ExampleClient_Election() {
	ctx := context.Background()
	client, err := dlock.Open(ctx, "mem://example-election")
	if err != nil {
		panic(err)
	}
	defer client.Close()

	e := client.Election("billing-scheduler")
	lead, err := e.Campaign(ctx, "host-a:8080") // blocks until leader
	if err != nil {
		panic(err)
	}
	l, _ := e.Leader(ctx)
	fmt.Println("leader:", l.Value, "term:", l.Fence == lead.Fence())

	_ = lead.Unlock(ctx) // resign
	l, _ = e.Leader(ctx)
	fmt.Println("after resigning, held:", l.Held)
	// Output:
	// leader: host-a:8080 term: true
	// after resigning, held: false
}
