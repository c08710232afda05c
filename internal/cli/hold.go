package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/dlock-go/dlock"
)

const holdUsage = `Usage: dlock hold [flags] KEY

Takes the lock KEY and holds it, with no command, until dlock gets SIGINT
(Ctrl-C), SIGTERM, SIGHUP or SIGQUIT: then it releases the lock and exits
0. Like "etcdctl lock KEY". Once the lock is held, dlock prints its fence
on stdout ("fence=N") and refreshes the lease every TTL/3. If the lock is
lost, dlock exits 70. Not acquired (--try, or --wait ran out): exit 75, or
--conflict-exit-code.
`

func cmdHold(args []string, sio stdio) error {
	fs := newFlagSet("hold", holdUsage, sio)
	lf := addLockFlags(fs, "lease length `D`; refreshed every D/3; if dlock dies, others wait at most D")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	set := setFlags(fs)
	switch fs.NArg() {
	case 0:
		return usageError("hold", "missing KEY")
	case 1:
	default:
		return usageError("hold", "expected one KEY, got %d arguments (flags go before KEY; to run a command, use 'dlock run')", fs.NArg())
	}
	r, err := lf.runner("hold", set, fs.Arg(0), sio)
	if err != nil {
		return err
	}
	r.hold = true
	return r.run()
}

// holdLocked keeps l until a signal, then releases it.
func (r *runner) holdLocked(l *dlock.Lock, sigs <-chan os.Signal) error {
	fmt.Fprintf(r.sio.out, "fence=%d\n", l.Fence())
	r.vlogf("holding lock %q (fence %d) until SIGINT or SIGTERM", r.key, l.Fence())
	for {
		select {
		case s := <-sigs:
			if !isWaitSignal(s) {
				continue
			}
			err := r.release(l)
			switch {
			case errors.Is(l.Err(), dlock.ErrLost):
				return exitf(ExitLost, "dlock: lost lock %q (fence %d): %s", r.key, l.Fence(), r.lossCause(l.Err()))
			case errors.Is(err, dlock.ErrNotHeld):
				return exitf(ExitLost, "dlock: lock %q (fence %d) was no longer held: freed by another (dlock unlock --force) or expired; exit %d", r.key, l.Fence(), ExitLost)
			case err != nil:
				r.logf("warning: could not release lock %q: %s; it frees itself when its TTL runs out", r.key, clean(err))
			default:
				r.vlogf("released lock %q on %s", r.key, signalName(s))
			}
			return nil
		case <-l.Done():
			if errors.Is(l.Err(), dlock.ErrLost) {
				return exitf(ExitLost, "dlock: lost lock %q (fence %d): %s; exit %d", r.key, l.Fence(), r.lossCause(l.Err()), ExitLost)
			}
			return nil
		}
	}
}
