package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/dlock-go/dlock"
)

// Environment variables set for the command.
const (
	EnvKey   = "DLOCK_KEY"
	EnvFence = "DLOCK_FENCE"
	EnvToken = "DLOCK_TOKEN"
)

const defaultGrace = 10 * time.Second

const runUsage = `Usage: dlock run [flags] KEY -- CMD [ARGS...]
       dlock run [flags] -c 'SHELL COMMAND' KEY

Takes the lock KEY, runs CMD while holding it, and releases it when CMD
exits. Flags come before KEY; "--" separates CMD. CMD gets DLOCK_KEY,
DLOCK_FENCE (the fencing token: check it at the resource) and DLOCK_TOKEN.
The lease is refreshed every TTL/3 while CMD runs.

With --limit N, dlock takes one of N permits of KEY instead (at most N
commands hold KEY at once, like consul lock -n; every user of KEY must give
the same N, else exit 64); with --shared, a shared lock that runs beside
other --shared holders and excludes plain ones, like flock -s (a plain
holder that waits goes first).

Without --try or --wait, dlock waits until the lock is free (Ctrl-C or
SIGTERM stop the wait). Not acquired (--try, or --wait ran out): exit 75,
or --conflict-exit-code.

If the lock is lost while CMD runs (the backend could not be reached for a
whole TTL, or another owner took the key), CMD gets SIGTERM, then SIGKILL
after --grace, and dlock exits 70. CMD runs in its own process group, and
these signals go to the whole group, so what CMD started stops too
(--no-pgroup: CMD only). In the foreground of a terminal CMD stays in
dlock's group by default, so that it can use the terminal. SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1
and SIGUSR2 sent to dlock are passed on to CMD (Ctrl-C from the terminal
already reaches CMD and is not sent twice); dlock releases the lock when CMD
exits and exits with CMD's code (128+N when signal N killed it).
`

func cmdRun(args []string, sio stdio) error {
	fs := newFlagSet("run", runUsage, sio)
	lf := addLockFlags(fs, "lease length `D`; refreshed every D/3 while CMD runs; if dlock dies, others wait at most D")
	grace := durationFlag(fs, "grace", defaultGrace, "after losing the lock, send SIGKILL `D` after SIGTERM if CMD is still running")
	pgroup := fs.Bool("pgroup", true, "run CMD in its own process group and signal the whole group, so whatever CMD started stops too (default: on, except in the foreground of a terminal; --pgroup forces it there, where CMD then cannot read the terminal)")
	noPgroup := fs.Bool("no-pgroup", false, "run CMD in dlock's process group and signal CMD only (same as --pgroup=false)")
	shell := fs.String("c", "", "run the shell command `STRING` with /bin/sh -c instead of -- CMD, like flock -c")
	minHold := durationFlag(fs, "min-hold", 0, "keep the lock at least `D` after it was acquired, even when CMD exits sooner (a scheduled job run by several hosts then runs once per period; like ShedLock's lockAtLeastFor)")
	maxHold := durationFlag(fs, "max-hold", 0, "stop refreshing the lock `D` after it was acquired: the lock is then lost and CMD stopped as on any loss (caps a hung job; like ShedLock's lockAtMostFor)")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	set := setFlags(fs)
	rest, err := commandArgs("run", set, *shell, fs.Args(), " (or -c STRING; to hold a lock without a command, use 'dlock hold')")
	if err != nil {
		return err
	}
	r, err := lf.runner("run", set, rest[0], sio)
	if err != nil {
		return err
	}
	switch {
	case *minHold < 0 || *maxHold < 0:
		return usageError("run", "--min-hold and --max-hold must not be negative")
	case *maxHold > 0 && *minHold > *maxHold:
		return usageError("run", "--min-hold %v is longer than --max-hold %v", *minHold, *maxHold)
	}
	r.minHold, r.maxHold = *minHold, *maxHold
	if *pgroup, err = choosePgroup("run", set, *pgroup, *noPgroup, sio); err != nil {
		return err
	}
	r.argv, r.grace, r.pgroup = rest[2:], *grace, *pgroup
	return r.run()
}

// commandArgs checks the arguments after the flags, "KEY -- CMD ARGS" or,
// with -c STRING (set["c"], or flock's order "KEY -c STRING"), "KEY", and
// returns them as KEY, "--", CMD, ARGS. hint follows "missing -- CMD after
// KEY".
func commandArgs(cmd string, set map[string]bool, shell string, rest []string, hint string) ([]string, error) {
	if len(rest) == 3 && rest[1] == "-c" && !set["c"] {
		// flock's order: KEY -c STRING.
		shell, rest = rest[2], rest[:1]
		set = map[string]bool{"c": true}
	}
	if set["c"] {
		switch {
		case len(rest) == 0:
			return nil, usageError(cmd, "missing KEY")
		case len(rest) > 1:
			return nil, usageError(cmd, "-c STRING runs the shell command instead of -- CMD; got both (flags go before KEY)")
		case shell == "":
			return nil, usageError(cmd, "-c needs a shell command")
		}
		rest = []string{rest[0], "--", "/bin/sh", "-c", shell}
	}
	switch {
	case len(rest) == 0:
		return nil, usageError(cmd, "missing KEY")
	case len(rest) == 1:
		return nil, usageError(cmd, "missing -- CMD after KEY%s", hint)
	case rest[1] != "--":
		return nil, usageError(cmd, "expected -- after KEY, got %q (flags go before KEY)", rest[1])
	case len(rest) == 2:
		return nil, usageError(cmd, "missing CMD after --")
	}
	return rest, nil
}

// choosePgroup resolves --pgroup and --no-pgroup (set: the flags given):
// on by default, off in the foreground of a terminal.
func choosePgroup(cmd string, set map[string]bool, pgroup, noPgroup bool, sio stdio) (bool, error) {
	switch {
	case noPgroup && set["pgroup"] && pgroup:
		return false, usageError(cmd, "--pgroup and --no-pgroup exclude each other")
	case noPgroup:
		return false, nil
	case !set["pgroup"] && foregroundTerminal(sio.in):
		// Interactive: CMD keeps the terminal (prompts, Ctrl-Z), and
		// the terminal's Ctrl-C reaches everything CMD started anyway.
		return false, nil
	}
	return pgroup, nil
}

// lockFlags are the flags run and hold share: the backend and how the lock
// is taken.
type lockFlags struct {
	bf        *backendFlags
	ttl, wait *time.Duration
	try       *bool
	limit     *int
	shared    *bool
	conflict  *int
	verbose   *bool
}

// addLockFlags defines the lock flags on fs; ttlUsage describes --ttl.
func addLockFlags(fs *flag.FlagSet, ttlUsage string) *lockFlags {
	bf := addBackendFlags(fs)
	bf.shared = true
	return &lockFlags{
		bf:       bf,
		ttl:      durationFlag(fs, "ttl", dlock.DefaultTTL, ttlUsage),
		wait:     durationFlag(fs, "wait", 0, "wait at most `D` for the lock, connecting included, then exit 75 (69 if the backend gave no answer) (default: wait until acquired; 0 = --try)"),
		try:      fs.Bool("try", false, "make one attempt; exit 75 at once if the lock is held"),
		limit:    fs.Int("limit", 0, "take one of `N` permits of KEY (a semaphore: at most N holders at once, like consul lock -n); every holder of KEY must use the same N"),
		shared:   fs.Bool("shared", false, "take a shared (reader's) lock of KEY, like flock -s: shared holders run together and exclude the exclusive ones; a waiting exclusive holder goes first"),
		conflict: fs.Int("conflict-exit-code", ExitNotAcquired, "exit with `N` (0-255) instead of 75 when the lock is held by another owner (--try, or --wait ran out), like flock -E"),
		verbose:  fs.Bool("v", false, "report waiting, acquisition and release on stderr"),
	}
}

// runner checks the parsed lock flags (set: the flags given) and key for
// command cmd, and returns a runner for key with them; --wait 0 is --try.
func (f *lockFlags) runner(cmd string, set map[string]bool, key string, sio stdio) (*runner, error) {
	switch {
	case *f.try && set["wait"]:
		return nil, usageError(cmd, "--try and --wait exclude each other")
	case set["ttl"] && *f.ttl <= 0:
		return nil, usageError(cmd, "--ttl must be positive, got %v", *f.ttl)
	case *f.conflict < 0 || *f.conflict > 255:
		return nil, usageError(cmd, "--conflict-exit-code must be between 0 and 255, got %d", *f.conflict)
	case set["limit"] && (*f.limit < 1 || *f.limit > dlock.MaxLimit):
		return nil, usageError(cmd, "--limit must be between 1 and %d, got %d", dlock.MaxLimit, *f.limit)
	case set["limit"] && *f.shared:
		return nil, usageError(cmd, "--limit and --shared exclude each other")
	}
	if err := dlock.ValidateKey(key); err != nil {
		return nil, usageError(cmd, "%s", clean(err))
	}
	return &runner{
		key: key, bf: f.bf, ttl: ttlOrDefault(set["ttl"], *f.ttl), wait: *f.wait,
		try: *f.try || (set["wait"] && *f.wait == 0), conflict: *f.conflict, verbose: *f.verbose, sio: sio,
		limit: *f.limit, shared: *f.shared,
	}, nil
}

type runner struct {
	key      string
	argv     []string
	bf       *backendFlags
	ttl      time.Duration
	wait     time.Duration
	try      bool
	grace    time.Duration
	pgroup   bool
	minHold  time.Duration // run --min-hold
	maxHold  time.Duration // run --max-hold
	limit    int           // a semaphore's permits (--limit), or 0
	shared   bool          // a reader's share (--shared)
	conflict int           // exit code when the lock is held by another owner
	hold     bool          // no command: hold until a signal (dlock hold)
	elect    bool          // campaign in the election key (dlock elect)
	value    string        // the candidate's value (dlock elect)
	loop     bool          // campaign again after each term (elect --loop)
	shown    string        // the backend's URL for messages, once opened
	verbose  bool
	sio      stdio
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.sio.err, "dlock: "+format+"\n", args...)
}

func (r *runner) vlogf(format string, args ...any) {
	if r.verbose {
		r.logf(format, args...)
	}
}

type acquired struct {
	c   *dlock.Client
	l   *dlock.Lock
	err error
}

func (r *runner) run() error {
	// Signals stop the connection and the wait; once CMD runs they are
	// passed on to it.
	sigs, stopSigs := notify(forwardSignals...)
	defer stopSigs()
	a := r.await(sigs, nil)
	if a.err == nil && r.loop {
		// lead campaigns on a.c again after each term, and closes it.
		return r.lead(a.c, a.l, sigs)
	}
	if a.c != nil {
		defer closeClient(a.c, a.err, *r.bf.timeout)
	}
	if a.err != nil {
		return a.err
	}
	if r.hold {
		return r.holdLocked(a.l, sigs)
	}
	return r.runLocked(a.l, sigs)
}

// await opens the backend, unless c is a client to take the lock on
// again (elect --loop), and takes the lock, while sigs can interrupt. The
// client it returns is c, or the one that replaced it (see acquire), or
// nil when none could be opened.
func (r *runner) await(sigs <-chan os.Signal, c *dlock.Client) acquired {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)

	res := make(chan acquired, 1)
	go func() {
		c, l, err := r.acquire(ctx, c)
		res <- acquired{c, l, err}
	}()
	var a acquired
wait:
	for {
		select {
		case a = <-res:
			break wait
		case s := <-sigs:
			if !isWaitSignal(s) {
				continue
			}
			cancel(&signalError{sig: s})
			a = <-res
			if a.err == nil {
				// Granted just as the signal came: give it back.
				_ = r.release(a.l)
				a.err = exitf(128+signalNum(s), "dlock: interrupted by %s before running the command", signalName(s))
			}
			break wait
		}
	}
	return a
}

// closeClient closes c. After the backend was found unavailable (exit
// 69), dlock does not wait more than a moment for Close, whose clean-up
// requests would only wait for the same backend: a lock it may have
// granted unseen frees itself when its TTL runs out.
func closeClient(c *dlock.Client, err error, timeout time.Duration) {
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != ExitUnavailable {
		_ = c.Close()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Close()
	}()
	t := time.NewTimer(min(timeout, 250*time.Millisecond))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func isWaitSignal(s os.Signal) bool {
	for _, w := range waitSignals {
		if s == w {
			return true
		}
	}
	return false
}

// acquire opens the backend, unless c is an open client to reuse, and
// takes the lock as --try / --wait say.
//
// The flags bound the whole of it, connecting included: with --try, the
// connect timeout; with --wait D, D (and the connect timeout for opening);
// without either, the connect timeout for opening, then as long as it
// takes. A backend that does not answer must not pass for contention, so
// while waiting, an Inspect runs beside the Lock as a probe: only when the
// backend answered it (the key is held by someone) does a wait that ran out
// exit with the conflict code; when the probe fails or gets no answer in
// time, dlock exits 69 with the backend's error.
func (r *runner) acquire(ctx context.Context, c *dlock.Client) (*dlock.Client, *dlock.Lock, error) {
	hook := func(e dlock.Event) {
		if e.Kind == dlock.EventRefreshFailed {
			r.logf("warning: could not refresh lock %q: %s", e.Key, clean(e.Err))
		}
	}
	start := time.Now()
	bound := *r.bf.timeout
	if !r.try && r.wait > 0 {
		bound = r.wait
	}
	// bctx ends when the flags' bound runs out (forever: never).
	bctx, bcancel := context.WithTimeout(ctx, bound)
	defer bcancel()
	if !r.try && r.wait == 0 {
		bctx = ctx
	}
	opts := []dlock.LockOption{dlock.WithMetadata(r.metadata())}
	if r.ttl > 0 {
		opts = append(opts, dlock.WithTTL(r.ttl))
	}
	if r.minHold > 0 {
		opts = append(opts, dlock.WithMinHold(r.minHold))
	}
	if r.maxHold > 0 {
		opts = append(opts, dlock.WithMaxHold(r.maxHold))
	}
	var (
		l     *dlock.Lock
		probe <-chan error
		err   error
	)
	for reused := c != nil; ; reused = false {
		if c == nil {
			if c, r.shown, err = r.bf.open(bctx, dlock.WithEventHook(hook)); err != nil {
				return nil, nil, err
			}
		}
		if r.try {
			l, err = r.take(bctx, c, true, opts)
		} else {
			if r.wait > 0 {
				r.vlogf("waiting up to %v for lock %q on %s", r.wait, r.key, r.shown)
			} else {
				r.vlogf("waiting for lock %q on %s", r.key, r.shown)
			}
			l, probe, err = r.lockProbed(bctx, c, opts)
		}
		if !reused || !clientClosed(err) || ctx.Err() != nil {
			break
		}
		// A client outlives the sessions of its backend: a ZooKeeper
		// connection opens a new session after one expired (the locks
		// of the old one were lost), etcd grants new leases for those
		// that expired, the SQL and Redis drivers dial anew. Only a
		// closed client, or a driver that closed itself, refuses every
		// later request: open a new one, once.
		r.logf("warning: the connection to %s was closed; connecting again", r.shown)
		_ = c.Close()
		c = nil
	}
	shown := r.shown
	if err == nil {
		r.vlogf("acquired lock %q (fence %d) after %v", r.key, l.Fence(), time.Since(start).Round(time.Millisecond))
		return c, l, nil
	}
	if se := signalCause(ctx); se != nil {
		return c, nil, exitf(se.code(), "dlock: interrupted by %s while waiting for lock %q", signalName(se.sig), r.key)
	}
	var pe *probeError
	if errors.As(err, &pe) {
		return c, nil, backendError(ctx, pe.ctx, pe.err, fmt.Sprintf("lock %q: backend %s did not answer", r.key, shown))
	}
	ranOut := !r.try && r.wait > 0 && errors.Is(err, context.DeadlineExceeded) && errors.Is(bctx.Err(), context.DeadlineExceeded)
	if ranOut && !errors.Is(err, dlock.ErrUnavailable) {
		// Contention only if the backend answered the probe.
		if perr := <-probe; perr != nil {
			return c, nil, exitf(ExitUnavailable, "dlock: lock %q: backend %s gave no answer within --wait %v: %s", r.key, shown, r.wait, clean(perr))
		}
	}
	if errors.Is(err, dlock.ErrNotAcquired) || (ranOut && !errors.Is(err, dlock.ErrUnavailable)) {
		holder := r.holder(ctx, c)
		if r.try {
			return c, nil, exitf(r.conflict, "dlock: lock %q is held%s; not acquired (--try)", r.key, holder)
		}
		return c, nil, exitf(r.conflict, "dlock: lock %q still held%s after waiting %v; not acquired", r.key, holder, r.wait)
	}
	return c, nil, backendError(ctx, bctx, err, fmt.Sprintf("lock %q", r.key))
}

// clientClosed reports whether err, from a lock attempt, says the client
// or its driver is closed.
func clientClosed(err error) bool {
	var pe *probeError
	if errors.As(err, &pe) {
		err = pe.err
	}
	return errors.Is(err, dlock.ErrClosed)
}

// probeError is the error of a probe that found the backend unavailable
// while Lock was waiting.
type probeError struct {
	ctx context.Context
	err error
}

func (e *probeError) Error() string { return e.err.Error() }

// lockProbed waits for the lock with Lock, and meanwhile asks the backend
// once with Inspect (bounded by the connect timeout and ctx) whether it
// answers. A probe that fails ends the wait at once with a *probeError. The
// probe's outcome is sent on the returned channel when Lock ended first.
func (r *runner) lockProbed(ctx context.Context, c *dlock.Client, opts []dlock.LockOption) (*dlock.Lock, <-chan error, error) {
	lctx, lcancel := context.WithCancelCause(ctx)
	defer lcancel(nil)
	pctx, pcancel := context.WithTimeout(lctx, *r.bf.timeout)
	probe := make(chan error, 1)
	go func() {
		defer pcancel()
		_, err := c.Inspect(pctx, r.key)
		if err != nil && lctx.Err() == nil {
			lcancel(&probeError{ctx: pctx, err: err})
		}
		probe <- err
	}()
	l, err := r.take(lctx, c, false, opts)
	if pe, ok := context.Cause(lctx).(*probeError); ok && err != nil {
		return nil, probe, pe
	}
	return l, probe, err
}

// take makes the runner's attempt (try) or wait: for one of --limit
// permits, a --shared lock, or the key alone.
func (r *runner) take(ctx context.Context, c *dlock.Client, try bool, opts []dlock.LockOption) (*dlock.Lock, error) {
	switch {
	case r.limit > 0:
		sem := c.Semaphore(r.key, r.limit)
		if try {
			return sem.TryAcquire(ctx, opts...)
		}
		return sem.Acquire(ctx, opts...)
	case r.elect:
		return c.Election(r.key).Campaign(ctx, r.value, opts...)
	case r.shared:
		rw := c.RWMutex(r.key)
		if try {
			return rw.TryRLock(ctx, opts...)
		}
		return rw.RLock(ctx, opts...)
	case try:
		return c.TryLock(ctx, r.key, opts...)
	}
	return c.Lock(ctx, r.key, opts...)
}

// holder describes who holds the key, as " by META (fence N, expires in D)",
// or "" when that cannot be told quickly.
func (r *runner) holder(ctx context.Context, c *dlock.Client) string {
	ictx, cancel := context.WithTimeout(ctx, min(*r.bf.timeout, 500*time.Millisecond))
	defer cancel()
	if h, err := c.Holders(ictx, r.key); err == nil && len(h.Holders) > 0 && (r.limit > 0 || r.shared || h.Holders[0].Shared) {
		return describeHolders(h)
	}
	in, err := c.Inspect(ictx, r.key)
	if err != nil || !in.Held {
		return " by another owner"
	}
	return " by " + describeHolder(in)
}

// describeHolders returns " by N shared holders (limit L)", or " by META
// (...)" for an exclusive holder, with the writers waiting.
func describeHolders(h dlock.Holders) string {
	var s string
	switch first := h.Holders[0]; {
	case !first.Shared:
		s = " by " + describeHolder(dlock.Info{Held: true, Fence: first.Fence, TTL: first.TTL, Metadata: first.Metadata})
	case h.Limit > 0:
		s = fmt.Sprintf(" by %d of %d permit holders", len(h.Holders), h.Limit)
	default:
		s = fmt.Sprintf(" by %d shared holders", len(h.Holders))
	}
	if h.WritersWaiting > 0 {
		s += fmt.Sprintf(", %d exclusive waiting", h.WritersWaiting)
	}
	return s
}

// describeHolder returns "META (fence N, expires in D)".
func describeHolder(in dlock.Info) string {
	who := oneLine(in.Metadata)
	if who == "" {
		who = "another owner"
	}
	var extra []string
	if in.Fence > 0 {
		extra = append(extra, "fence "+strconv.FormatUint(in.Fence, 10))
	}
	if in.TTL > 0 {
		extra = append(extra, "expires in "+roundDuration(in.TTL).String())
	}
	if len(extra) == 0 {
		return who
	}
	return who + " (" + strings.Join(extra, ", ") + ")"
}

// metadata describes this owner for Inspect and dlock status.
func (r *runner) metadata() string {
	cmd := "dlock-hold"
	if len(r.argv) > 0 {
		cmd = filepath.Base(r.argv[0])
	}
	return dlock.DefaultMetadata() + " " + owner() + " cmd=" + cmd
}

// owner names the user dlock runs as: "user=NAME" from the user database
// (not $USER, which may be unset or stale), else "uid=N".
func owner() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "user=" + u.Username
	}
	return "uid=" + strconv.Itoa(os.Getuid())
}

// release unlocks l, bounded by the connect timeout.
func (r *runner) release(l *dlock.Lock) error {
	ctx, cancel := context.WithTimeout(context.Background(), *r.bf.timeout)
	defer cancel()
	return l.Unlock(ctx)
}

// runLocked runs the command while l is held and returns how dlock exits.
func (r *runner) runLocked(l *dlock.Lock, sigs <-chan os.Signal) error {
	granted := time.Now()
	cmd := exec.Command(r.argv[0], r.argv[1:]...)
	cmd.Env = childEnv(os.Environ(), r.key, l)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r.sio.in, r.sio.out, r.sio.err
	cmd.SysProcAttr = procAttr(r.pgroup)

	started := make(chan error, 1)
	exited := make(chan error, 1)
	go func() {
		// The parent-death signal is tied to the thread that started the
		// child: keep that thread until the child has exited.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		if uerr := r.release(l); uerr != nil && !errors.Is(uerr, dlock.ErrNotHeld) {
			r.logf("warning: could not release lock %q: %s; it frees itself when its TTL runs out", r.key, clean(uerr))
		}
		code := ExitCannotRun
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = ExitNotFound
		}
		return exitf(code, "dlock: cannot run %s: %s", r.argv[0], clean(err))
	}

	done := l.Done()
	var (
		lost bool
		kill <-chan time.Time
	)
running:
	for {
		select {
		case <-exited:
			break running
		case s := <-sigs:
			if keyboardSignal(s) && !r.pgroup && inForeground() {
				// The terminal sent it to the whole foreground group,
				// CMD included.
				continue
			}
			if err := sendSignal(cmd, s, r.pgroup); err != nil {
				r.vlogf("could not pass %s on to %s: %v", signalName(s), r.argv[0], err)
			}
		case <-done:
			done = nil
			lerr := l.Err()
			if !errors.Is(lerr, dlock.ErrLost) {
				continue
			}
			lost = true
			r.logf("lost lock %q (fence %d): %s; sending SIGTERM to %s (pid %d)", r.key, l.Fence(), r.lossCause(lerr), r.argv[0], cmd.Process.Pid)
			_ = sendSignal(cmd, termSignal, r.pgroup)
			kill = time.After(r.grace)
		case <-kill:
			kill = nil
			r.logf("%s still running %v after SIGTERM; sending SIGKILL", r.argv[0], r.grace)
			_ = sendSignal(cmd, killSignal, r.pgroup)
		}
	}
	code := exitCode(cmd.ProcessState)
	if !lost && errors.Is(l.Err(), dlock.ErrLost) {
		// Lost as CMD exited: it may have run part of its time unprotected.
		lost = true
		r.logf("lost lock %q (fence %d): %s", r.key, l.Fence(), r.lossCause(l.Err()))
	}
	if !lost && r.minHold > 0 {
		r.keepMinHold(l, granted, sigs)
	}
	if lost {
		_ = r.release(l) // the lock is gone; this only tidies up
		if r.pgroup {
			_ = sendSignal(cmd, killSignal, true) // leftovers of CMD's group
		}
		return exitf(ExitLost, "dlock: %s ended (status %d) after lock %q was lost; exit %d", r.argv[0], code, r.key, ExitLost)
	}
	if err := r.release(l); errors.Is(err, dlock.ErrNotHeld) {
		// Freed by someone else (dlock unlock --force) or run out before
		// the next refresh could tell: CMD ran part of its time
		// unprotected.
		return exitf(ExitLost, "dlock: %s ended (status %d), but lock %q (fence %d) was no longer held: freed by another (dlock unlock --force) or expired; exit %d", r.argv[0], code, r.key, l.Fence(), ExitLost)
	} else if err != nil {
		r.logf("warning: could not release lock %q: %s; it frees itself when its TTL runs out", r.key, clean(err))
	} else {
		r.vlogf("released lock %q; %s exited with status %d", r.key, r.argv[0], code)
	}
	return &exitError{code: code}
}

// keepMinHold keeps l, after CMD exited, until --min-hold has passed since
// granted: dlock's own Client then still refreshes it, and the release
// after it frees the key on every backend (a lease left to run out alone
// would end with dlock's connection on etcd and ZooKeeper). A signal ends
// the wait early; the release then still leaves the lease to run out at
// the hold's end where the backend keeps leases of a closed connection. A
// loss meanwhile ends it with a warning: CMD ran protected all the same.
func (r *runner) keepMinHold(l *dlock.Lock, granted time.Time, sigs <-chan os.Signal) {
	rest := time.Until(granted.Add(r.minHold))
	if rest <= 0 {
		return
	}
	r.vlogf("keeping lock %q for %v more (--min-hold %v)", r.key, rest.Round(time.Millisecond), r.minHold)
	t := time.NewTimer(rest)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return
		case <-l.Done():
			if err := l.Err(); errors.Is(err, dlock.ErrLost) {
				r.logf("warning: lost lock %q (fence %d) after %s exited, before --min-hold ended: %s", r.key, l.Fence(), r.argv[0], r.lossCause(err))
			}
			return
		case s := <-sigs:
			if isWaitSignal(s) {
				r.vlogf("%s: releasing lock %q before --min-hold ends", signalName(s), r.key)
				return
			}
		}
	}
}

// lossCause returns why the lock was lost, without repeating the key.
func (r *runner) lossCause(err error) string {
	return strings.TrimPrefix(clean(err), fmt.Sprintf("lock lost: %q: ", r.key))
}

// childEnv returns env with DLOCK_KEY, DLOCK_FENCE and DLOCK_TOKEN set for l.
func childEnv(env []string, key string, l *dlock.Lock) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if name == EnvKey || name == EnvFence || name == EnvToken {
			continue
		}
		out = append(out, kv)
	}
	return append(out,
		EnvKey+"="+key,
		EnvFence+"="+strconv.FormatUint(l.Fence(), 10),
		EnvToken+"="+l.Token(),
	)
}

// oneLine returns s with control characters escaped, so that a value stored
// by someone else cannot break our output lines.
func oneLine(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) < 0 {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// roundDuration rounds d for display.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// ttlOrDefault returns the --ttl value when it was given, else 0: the
// library's default then applies, which fits the backend's maximum TTL.
func ttlOrDefault(given bool, ttl time.Duration) time.Duration {
	if given {
		return ttl
	}
	return 0
}
