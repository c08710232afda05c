package dlock_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/memdlock"
)

// TestLogLines: every line the Client logs, at every level, carries the
// backend and the key, the lines about a grant its fence and those about a
// call or a hold a duration; no line carries an owner token, whether the
// caller gave it or the generator made it. The run takes, refuses,
// releases, loses (a refresh the backend refuses), retries after failed
// attempts, and force-frees locks.
func TestLogLines(t *testing.T) {
	var out lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const given, generated = "secret-given-token-1f3a", "secret-generated-token-9c2e"
	store := memdlock.NewStore()
	f := &faulty{Locker: store.Driver(), acquireErrs: 2}
	c := dlock.NewClient(f, dlock.WithLogger(logger),
		dlock.WithTokenGenerator(func() (string, error) { return generated + fmt.Sprint(time.Now().UnixNano()), nil }))
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// A refused attempt (another client holds the key), two failed ones,
	// retried, then a grant once the other client lets go.
	other := dlock.NewClient(store.Driver(), dlock.WithLogger(logger))
	defer other.Close()
	o, err := other.Lock(ctx, "logs/a")
	if err != nil {
		t.Fatalf("Lock by the other client: %v", err)
	}
	time.AfterFunc(100*time.Millisecond, func() { _ = o.Unlock(context.Background()) })
	l, err := c.Lock(ctx, "logs/a", dlock.WithToken(given), dlock.WithRetry(dlock.LinearBackoff(5*time.Millisecond)))
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if _, err := c.TryLock(ctx, "logs/a"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock of a held key = %v, want ErrNotAcquired", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	// A lock lost to a refresh the backend refuses.
	l, err = c.Lock(ctx, "logs/b", dlock.WithTTL(time.Second))
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	f.mu.Lock()
	f.refreshErr = fmt.Errorf("%w: refused by the test", driver.ErrNotHeld)
	f.mu.Unlock()
	select {
	case <-l.Done():
	case <-ctx.Done():
		t.Fatal("the lock was not lost")
	}
	f.mu.Lock()
	f.refreshErr = nil
	f.mu.Unlock()
	// A force-freed lock, and a lock set.
	if _, err := c.Lock(ctx, "logs/c"); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if _, err := other.ForceUnlock(ctx, "logs/c"); err != nil {
		t.Fatalf("ForceUnlock: %v", err)
	}
	set, err := c.LockMany(ctx, []string{"logs/d", "logs/e"})
	if err != nil {
		t.Fatalf("LockMany: %v", err)
	}
	if err := set.Unlock(ctx); err != nil {
		t.Fatalf("LockSet.Unlock: %v", err)
	}

	text := out.String()
	if strings.Contains(text, given) || strings.Contains(text, generated) {
		t.Errorf("the log carries an owner token:\n%s", text)
	}
	levels := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msg, _ := rec["msg"].(string)
		levels[rec["level"].(string)]++
		if rec["backend"] != "memory" {
			t.Errorf("%q: backend = %v, want memory", msg, rec["backend"])
		}
		if k, _ := rec["key"].(string); !strings.HasPrefix(k, "logs/") {
			t.Errorf("%q: key = %v, want the key", msg, rec["key"])
		}
		switch msg {
		case "dlock: acquired", "dlock: released", "dlock: lock lost", "dlock: lock freed whatever its owner (ForceUnlock)":
			if _, ok := rec["fence"]; !ok {
				t.Errorf("%q has no fence", msg)
			}
		}
		switch msg {
		case "dlock: acquired", "dlock: attempt failed while waiting; retrying":
			if _, ok := rec["duration"]; !ok {
				t.Errorf("%q has no duration", msg)
			}
		case "dlock: released", "dlock: lock lost":
			if _, ok := rec["held"]; !ok {
				t.Errorf("%q has no held duration", msg)
			}
		}
	}
	for _, level := range []string{"DEBUG", "WARN", "ERROR"} {
		if levels[level] == 0 {
			t.Errorf("no %s line logged; the run should produce one (levels: %v)", level, levels)
		}
	}
}
