package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dlock-go/dlock"
)

// workerReady is the first line a coupons worker prints, once it is
// connected and waiting for its stdin to close before it starts.
const workerReady = "ready"

// cmdCouponsWorker is one worker process of "dlock demo coupons" (hidden):
// it claims coupons from the store in --dir until the promotion is used up,
// under the lock --key when given, else without any lock.
func cmdCouponsWorker(args []string, sio stdio) error {
	fs := newFlagSet("demo coupons-worker", "Usage: dlock demo coupons-worker [flags] (internal)\n", sio)
	bf := addBackendFlags(fs)
	dir := fs.String("dir", "", "store `directory`")
	coupons := fs.Int("coupons", 10, "coupons in the promotion")
	pause := durationFlag(fs, "pause", 10*time.Millisecond, "simulated work")
	id := fs.Int("id", 0, "worker number")
	key := fs.String("key", "", "lock `key`; empty: no lock")
	think := fs.Float64("think", 10, "rest up to this many pauses between claims")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		return usageError("demo coupons-worker", "needs --dir and no arguments")
	}
	ctx := context.Background()
	st := store{dir: *dir}
	claim := func(fence uint64) (bool, error) { return st.claim(*id, *coupons, fence, *pause, sio.out) }
	// Customers arrive now and then: a worker rests a random while
	// between claims, outside the lock.
	rest := func() {
		if t := time.Duration(*think * float64(*pause)); t > 0 {
			time.Sleep(rand.N(t))
		}
	}

	if *key == "" {
		fmt.Fprintln(sio.out, workerReady)
		_, _ = io.Copy(io.Discard, sio.in) // wait for the start
		for {
			rest()
			more, err := claim(0)
			if err != nil {
				return exitf(ExitFailure, "dlock: demo worker %d: %v", *id, err)
			}
			if !more {
				return nil
			}
		}
	}

	c, _, err := bf.open(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// Hand-offs between processes are found by polling: keep it brisk.
	opts := []dlock.LockOption{dlock.WithRetry(dlock.ExponentialBackoff(time.Millisecond, 20*time.Millisecond))}
	fmt.Fprintln(sio.out, workerReady)
	_, _ = io.Copy(io.Discard, sio.in)
	for {
		rest()
		lctx, cancel := context.WithTimeout(ctx, demoPhaseTimeout)
		l, err := c.Lock(lctx, *key, opts...)
		cancel()
		if err != nil {
			return backendError(ctx, nil, err, fmt.Sprintf("demo worker %d: lock %q", *id, *key))
		}
		more, err := claim(l.Fence())
		uctx, ucancel := context.WithTimeout(ctx, *bf.timeout)
		uerr := l.Unlock(uctx)
		ucancel()
		switch {
		case err != nil:
			return exitf(ExitFailure, "dlock: demo worker %d: %v", *id, err)
		case uerr != nil:
			return backendError(ctx, nil, uerr, fmt.Sprintf("demo worker %d: unlock %q", *id, *key))
		case !more:
			return nil
		}
	}
}

// store is the promotion's shared state: a counter file holding "COUNT
// FENCE" (coupons claimed, highest fence seen) replaced atomically by
// rename, and a log with one line per coupon handed out.
type store struct{ dir string }

func (s store) counterPath() string { return filepath.Join(s.dir, "counter") }
func (s store) logPath() string     { return filepath.Join(s.dir, "issued.log") }

func (s store) reset() error {
	if err := s.write(0, 0); err != nil {
		return err
	}
	return os.WriteFile(s.logPath(), nil, 0o600)
}

func (s store) read() (count int, fence uint64, err error) {
	b, err := os.ReadFile(s.counterPath())
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("counter file holds %q", b)
	}
	count, err = strconv.Atoi(f[0])
	if err != nil {
		return 0, 0, fmt.Errorf("counter file: %w", err)
	}
	fence, err = strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("counter file: %w", err)
	}
	return count, fence, nil
}

func (s store) write(count int, fence uint64) error {
	tmp, err := os.CreateTemp(s.dir, "counter-*")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(tmp, "%d %d\n", count, fence)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.counterPath())
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// claim is one read-check-write: it hands out a coupon when fewer than limit
// were claimed, and reports whether the worker should try again. fence is
// the lock's fencing token (0 without a lock); a write with a fence lower
// than one the store has seen is refused, as a fenced resource would.
func (s store) claim(id, limit int, fence uint64, pause time.Duration, out io.Writer) (bool, error) {
	count, seen, err := s.read()
	if err != nil {
		return false, err
	}
	if count >= limit {
		return false, nil
	}
	// The work between the check and the write takes a varying time.
	if pause > 0 {
		time.Sleep(pause/2 + rand.N(pause))
	}
	if fence > 0 && fence < seen {
		fmt.Fprintf(out, "worker %d: fence %d is older than %d: write refused\n", id, fence, seen)
		return true, nil
	}
	if err := s.write(count+1, max(fence, seen)); err != nil {
		return false, err
	}
	line := fmt.Sprintf("coupon #%d to worker %d", count+1, id)
	if fence > 0 {
		line += fmt.Sprintf(" (fence %d)", fence)
	}
	f, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return false, err
	}
	_, err = f.WriteString(line + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	fmt.Fprintln(out, line)
	return true, err
}

// issued counts the coupons in the log.
func (s store) issued() (int, error) {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if sc.Text() != "" {
			n++
		}
	}
	return n, sc.Err()
}
