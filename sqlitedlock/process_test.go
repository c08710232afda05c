package sqlitedlock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/sqlitedlock"
)

// Environment of the child processes of TestMultiProcess.
const (
	childEnv     = "DLOCK_SQLITE_TEST_CHILD" // the child's number
	childURLEnv  = "DLOCK_SQLITE_TEST_URL"
	childDirEnv  = "DLOCK_SQLITE_TEST_DIR"
	childRounds  = 50
	childWorkers = 4
)

// TestMultiProcess runs the test binary again as several processes that
// take the same lock on the same database file, all starting at once on a
// file that does not exist yet. Inside the critical section each increments
// a counter kept in a plain file (read, pause, write: a lost update shows
// as a short count), marks its presence with an exclusive file (an overlap
// shows at once) and logs its fence. Half of the processes run with
// busy_timeout=0, so that SQLite reports every contention on the file and
// the driver's own retry has to absorb it.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "sub", "locks.db")
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()

	type child struct {
		cmd *exec.Cmd
		out strings.Builder
	}
	children := make([]*child, childWorkers)
	for i := range children {
		url := "sqlite://" + db
		if i%2 == 1 {
			url += "?busy_timeout=0"
		}
		c := &child{cmd: exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMultiProcessChild$", "-test.count=1", "-test.v")}
		c.cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(i), childURLEnv+"="+url, childDirEnv+"="+dir)
		c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
		c.cmd.WaitDelay = 5 * time.Second
		children[i] = c
	}
	var wg sync.WaitGroup
	errs := make([]error, len(children))
	for i, c := range children {
		if err := c.cmd.Start(); err != nil {
			t.Fatalf("starting child %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.cmd.Wait()
		}()
	}
	wg.Wait()
	for i, c := range children {
		out := c.out.String()
		if errs[i] != nil {
			t.Errorf("child %d: %v\n%s", i, errs[i], out)
		}
		for _, s := range []string{"database is locked", "SQLITE_BUSY", "OVERLAP"} {
			if strings.Contains(out, s) {
				t.Errorf("child %d output contains %q:\n%s", i, s, out)
			}
		}
	}
	if t.Failed() {
		return
	}

	want := childWorkers * childRounds
	b, err := os.ReadFile(filepath.Join(dir, "counter"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := strconv.Atoi(string(b)); err != nil || got != want {
		t.Errorf("counter = %q, want %d", b, want)
	}
	f, err := os.Open(filepath.Join(dir, "fences"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		lines   int
		last    uint64
		perProc = map[string]int{}
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var who string
		var fence uint64
		if _, err := fmt.Sscan(sc.Text(), &who, &fence); err != nil {
			t.Fatalf("fence log line %q: %v", sc.Text(), err)
		}
		if fence <= last {
			t.Errorf("fence log line %d: fence %d after %d, want strictly increasing", lines+1, fence, last)
		}
		last = fence
		perProc[who]++
		lines++
	}
	if lines != want {
		t.Errorf("fence log has %d lines, want %d", lines, want)
	}
	for who, n := range perProc {
		if n != childRounds {
			t.Errorf("process %s held the lock %d times, want %d", who, n, childRounds)
		}
	}
	c, err := sqlitedlock.Open(ctx, db, sqlitedlock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in, err := c.Inspect(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	if in.Held || in.Fence != uint64(want) {
		t.Errorf("final Inspect = %+v, want free with fence %d (one per grant)", in, want)
	}
}

// TestMultiProcessChild is the body of one child process of
// TestMultiProcess; run directly, it does nothing.
func TestMultiProcessChild(t *testing.T) {
	id := os.Getenv(childEnv)
	if id == "" {
		t.Skip("runs only as a child of TestMultiProcess")
	}
	dir := os.Getenv(childDirEnv)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	c, err := dlock.Open(ctx, os.Getenv(childURLEnv))
	if err != nil {
		t.Fatalf("child %s: Open: %v", id, err)
	}
	defer c.Close()
	retry := dlock.WithRetry(dlock.ExponentialBackoff(time.Millisecond, 20*time.Millisecond))
	for r := range childRounds {
		l, err := c.Lock(ctx, "shared", retry, dlock.WithTTL(10*time.Second))
		if err != nil {
			t.Fatalf("child %s round %d: Lock: %v", id, r, err)
		}
		if err := criticalSection(dir, id, l.Fence()); err != nil {
			t.Errorf("child %s round %d: %v", id, r, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("child %s round %d: Unlock: %v", id, r, err)
		}
	}
}

func criticalSection(dir, id string, fence uint64) error {
	marker := filepath.Join(dir, "inside")
	m, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		return errors.New("OVERLAP: another process is inside the critical section")
	}
	if err != nil {
		return err
	}
	m.Close()
	defer os.Remove(marker)

	counter := filepath.Join(dir, "counter")
	n := 0
	if b, err := os.ReadFile(counter); err == nil {
		if n, err = strconv.Atoi(string(b)); err != nil {
			return fmt.Errorf("counter file: %v", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	time.Sleep(200 * time.Microsecond) // widen the window for a lost update
	if err := os.WriteFile(counter, []byte(strconv.Itoa(n+1)), 0o600); err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(dir, "fences"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	_, err = fmt.Fprintf(log, "%s-%d %d\n", id, os.Getpid(), fence)
	return err
}
