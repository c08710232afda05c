package cli

import (
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dlock-go/dlock"
)

const electUsage = `Usage: dlock elect [flags] NAME -- CMD [ARGS...]
       dlock elect [flags] -c 'SHELL COMMAND' NAME

Campaigns in the leader election NAME and runs CMD while leader, as
"dlock run" runs CMD while holding a lock: CMD gets DLOCK_KEY (NAME),
DLOCK_FENCE (the term: strictly increasing across the election's leaders)
and DLOCK_TOKEN; on losing leadership CMD gets SIGTERM, then SIGKILL after
--grace. The candidate's value (--value; default: host, pid, user and
command, as "dlock run" stores) is what "dlock leader NAME" shows; control
characters in it are stored escaped (\n, \t), on one line.

Without --loop, dlock resigns when CMD exits and exits as "dlock run" does:
CMD's code, 70 if leadership was lost while CMD ran, 128+N if signal N
ended the campaign. With --loop, dlock campaigns again after each term
(CMD exited, or leadership was lost and CMD stopped), on the same backend
connection, and runs CMD again, until SIGINT or SIGTERM: these stop the
campaign (exit 128+N), or are passed on to a running CMD, after which
dlock resigns and exits with CMD's code.
`

func cmdElect(args []string, sio stdio) error {
	fs := newFlagSet("elect", electUsage, sio)
	bf := addBackendFlags(fs)
	bf.shared = true
	var (
		try, shared bool
		wait        time.Duration
		limit       int
		conflict    = ExitNotAcquired
	)
	lf := &lockFlags{
		bf:   bf,
		ttl:  durationFlag(fs, "ttl", dlock.DefaultTTL, "lease length `D` of a term; refreshed every D/3 while CMD runs; if dlock dies, the next leader waits at most D"),
		wait: &wait, try: &try, limit: &limit, shared: &shared, conflict: &conflict,
		verbose: fs.Bool("v", false, "report campaigns, terms and resignations on stderr"),
	}
	grace := durationFlag(fs, "grace", defaultGrace, "after losing leadership, send SIGKILL `D` after SIGTERM if CMD is still running")
	pgroup := fs.Bool("pgroup", true, "run CMD in its own process group and signal the whole group (default: on, except in the foreground of a terminal)")
	noPgroup := fs.Bool("no-pgroup", false, "run CMD in dlock's process group and signal CMD only (same as --pgroup=false)")
	shell := fs.String("c", "", "run the shell command `STRING` with /bin/sh -c instead of -- CMD")
	value := fs.String("value", "", "the candidate's value `V`, shown by 'dlock leader' (default: host, pid, user and command)")
	loop := fs.Bool("loop", false, "after each term, campaign again and run CMD again, until SIGINT or SIGTERM")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	set := setFlags(fs)
	rest, err := commandArgs("elect", set, *shell, fs.Args(), " (or -c STRING)")
	if err != nil {
		return err
	}
	r, err := lf.runner("elect", set, rest[0], sio)
	if err != nil {
		return err
	}
	if *pgroup, err = choosePgroup("elect", set, *pgroup, *noPgroup, sio); err != nil {
		return err
	}
	r.argv, r.grace, r.pgroup = rest[2:], *grace, *pgroup
	r.elect, r.loop = true, *loop
	r.value = r.metadata()
	if set["value"] {
		r.value = oneLine(*value)
	}
	return r.run()
}

// lead runs CMD for the term l, then, until a signal stops it, campaigns
// again on the same client c and runs CMD for each new term (elect
// --loop): one connection serves every term. It closes c (or the client
// that replaced a closed one, see acquire) once, when it returns.
func (r *runner) lead(c *dlock.Client, l *dlock.Lock, sigs <-chan os.Signal) error {
	var campaignErr error // why the last campaign failed: closeClient hurries when the backend is unavailable
	defer func() {
		if c != nil {
			closeClient(c, campaignErr, *r.bf.timeout)
		}
	}()
	for {
		var stopping atomic.Bool
		relay := make(chan os.Signal, 8)
		done, joined := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(joined)
			for {
				select {
				case s := <-sigs:
					if isWaitSignal(s) {
						stopping.Store(true)
					}
					select {
					case relay <- s:
					case <-done:
						return
					}
				case <-done:
					return
				}
			}
		}()
		err := r.runLocked(l, relay)
		close(done)
		<-joined
		if stopping.Load() {
			return err
		}
		var ee *exitError
		switch {
		case !errors.As(err, &ee):
			return err
		case ee.code == ExitLost:
			r.logf("%s; campaigning again", strings.TrimPrefix(ee.msg, "dlock: "))
		case ee.msg != "":
			// CMD could not be started: it would fail every term.
			return err
		default:
			r.vlogf("%s exited with status %d; campaigning again", r.argv[0], ee.code)
		}
		a := r.await(sigs, c)
		c = a.c
		if a.err != nil {
			campaignErr = a.err
			return a.err
		}
		l = a.l
	}
}
