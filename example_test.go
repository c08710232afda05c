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
