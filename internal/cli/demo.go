package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

const demoUsage = `Usage: dlock demo coupons [flags]

The classic race, live. A promotion offers a fixed number of coupons; its
counter lives in a shared store (a small file). Worker processes each claim
coupons: read the counter, check it is below the limit, work a little,
write counter+1 and hand out a coupon. The demo runs once without a lock
and once with "read, check, write" under a dlock lock on the backend, and
prints how many coupons went out each time:

  without lock: 23 coupons issued
  with lock: 10 coupons issued

Without the lock, workers read the same counter value and all hand out the
same coupon: the promotion over-issues. With it, exactly the limit.
`

// demoPhaseTimeout bounds one run of the workers.
const demoPhaseTimeout = 2 * time.Minute

func cmdDemo(args []string, sio stdio) error {
	if len(args) == 0 {
		return usageError("demo", "missing demo name: coupons")
	}
	switch args[0] {
	case "coupons":
		return cmdCoupons(args[1:], sio)
	case "coupons-worker":
		return cmdCouponsWorker(args[1:], sio)
	case "-h", "-help", "--help":
		// The only demo: its usage and flags.
		return cmdCoupons([]string{"-h"}, sio)
	}
	return usageError("demo", "unknown demo %q; there is: coupons", args[0])
}

func cmdCoupons(args []string, sio stdio) error {
	fs := newFlagSet("demo coupons", demoUsage, sio)
	bf := addBackendFlags(fs)
	workers := fs.Int("workers", 8, "number of worker `processes`")
	coupons := fs.Int("coupons", 10, "coupons in the promotion")
	pause := durationFlag(fs, "pause", 10*time.Millisecond, "simulated work `D` between reading and writing the counter")
	verbose := fs.Bool("v", false, "show every coupon handed out, with the lock's fencing token")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usageError("demo coupons", "unexpected argument %q", fs.Arg(0))
	case *workers < 1 || *workers > 256:
		return usageError("demo coupons", "--workers must be between 1 and 256")
	case *coupons < 1 || *coupons > 10000:
		return usageError("demo coupons", "--coupons must be between 1 and 10000")
	}

	// Check the backend once here, so that a bad URL gives one clear
	// line instead of one per worker.
	ctx, stop := signalContext()
	defer stop()
	backend, err := bf.resolve()
	if err != nil {
		return err
	}
	if inProcessOnly(backend) {
		return usageError("demo coupons", "%s locks within one process only, and the workers are separate processes: use an SQLite file or a server", redact(backend))
	}
	c, shown, err := bf.open(ctx)
	if err != nil {
		return err
	}
	c.Close()

	exe, err := os.Executable()
	if err != nil {
		return exitf(ExitFailure, "dlock: demo: cannot find the dlock executable: %v", err)
	}
	dir, err := os.MkdirTemp("", "dlock-demo-")
	if err != nil {
		return exitf(ExitFailure, "dlock: demo: %v", err)
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(sio.out, "%d workers claim coupons from a promotion of %d (lock backend: %s)\n", *workers, *coupons, shown)
	d := &demo{
		exe: exe, dir: dir, backend: backend, timeout: *bf.timeout,
		workers: *workers, coupons: *coupons, pause: *pause, verbose: *verbose, sio: sio,
	}
	for _, locked := range []bool{false, true} {
		n, err := d.phase(ctx, locked)
		if err != nil {
			if se := signalCause(ctx); se != nil {
				return exitf(se.code(), "dlock: demo: %v", se)
			}
			return err
		}
		label := "without lock"
		if locked {
			label = "with lock"
		}
		fmt.Fprintf(sio.out, "%s: %d coupons issued\n", label, n)
	}
	return nil
}

type demo struct {
	exe, dir, backend string
	timeout           time.Duration
	workers, coupons  int
	pause             time.Duration
	verbose           bool
	sio               stdio
}

// phase runs the workers once, with or without the lock, and returns how
// many coupons they handed out.
func (d *demo) phase(ctx context.Context, locked bool) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, demoPhaseTimeout)
	defer cancel()
	st := store{dir: d.dir}
	if err := st.reset(); err != nil {
		return 0, exitf(ExitFailure, "dlock: demo: %v", err)
	}
	key := ""
	if locked {
		key = "dlock-demo-coupons-" + randomHex()
	}

	type worker struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		ready chan bool
	}
	var (
		ws  []*worker
		out sync.Mutex
		wg  sync.WaitGroup
	)
	abort := func(err error) (int, error) {
		for _, w := range ws {
			_ = w.cmd.Process.Kill()
		}
		wg.Wait()
		for _, w := range ws {
			_ = w.cmd.Wait()
		}
		return 0, err
	}
	for i := 1; i <= d.workers; i++ {
		args := []string{"demo", "coupons-worker",
			"--dir", d.dir, "--coupons", strconv.Itoa(d.coupons), "--pause", d.pause.String(),
			"--id", strconv.Itoa(i), "--connect-timeout", d.timeout.String()}
		if key != "" {
			args = append(args, "--key", key)
		}
		cmd := exec.CommandContext(ctx, d.exe, args...)
		// The URL goes by environment, not argv, so no password shows in ps.
		cmd.Env = append(os.Environ(), EnvBackend+"="+d.backend)
		cmd.Stderr = d.sio.err
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return abort(exitf(ExitFailure, "dlock: demo: %v", err))
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return abort(exitf(ExitFailure, "dlock: demo: %v", err))
		}
		if err := cmd.Start(); err != nil {
			return abort(exitf(ExitFailure, "dlock: demo: cannot start a worker: %v", err))
		}
		w := &worker{cmd: cmd, stdin: stdin, ready: make(chan bool, 1)}
		ws = append(ws, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(stdout)
			first := true
			for sc.Scan() {
				if first {
					first = false
					w.ready <- sc.Text() == workerReady
					continue
				}
				if d.verbose {
					out.Lock()
					fmt.Fprintf(d.sio.out, "  %s\n", sc.Text())
					out.Unlock()
				}
			}
			if first {
				w.ready <- false
			}
		}()
	}
	// Start them all at once, once every one is connected and waiting.
	for i, w := range ws {
		select {
		case ok := <-w.ready:
			if !ok {
				return abort(exitf(ExitFailure, "dlock: demo: worker %d failed to start", i+1))
			}
		case <-ctx.Done():
			return abort(exitf(ExitFailure, "dlock: demo: workers not ready: %v", context.Cause(ctx)))
		}
	}
	for _, w := range ws {
		w.stdin.Close()
	}
	wg.Wait()
	var failed error
	for i, w := range ws {
		if err := w.cmd.Wait(); err != nil && failed == nil {
			failed = exitf(ExitFailure, "dlock: demo: worker %d: %v", i+1, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, exitf(ExitFailure, "dlock: demo: workers did not finish: %v", context.Cause(ctx))
	}
	if failed != nil {
		return 0, failed
	}
	n, err := st.issued()
	if err != nil {
		return 0, exitf(ExitFailure, "dlock: demo: %v", err)
	}
	return n, nil
}

// inProcessOnly reports a backend URL whose locks do not reach other
// processes.
func inProcessOnly(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	switch strings.ToLower(u.Scheme) {
	case "mem":
		return true
	case "sqlite":
		return strings.Contains(u.Opaque+u.Host+u.Path, ":memory:")
	}
	return false
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
