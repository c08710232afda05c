// Package cli implements the dlock command: run a command while holding a
// distributed lock (run) or while leader of an election (elect), show who
// holds a lock (status) or leads an election (leader), and show what a lock
// is for (demo). cmd/dlock calls Main; docs/cli.md is the user's guide.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/dlock-go/dlock"
)

// Exit codes. Where one fits, they follow sysexits.h; a command run by
// "dlock run" passes its own exit code through, so these can collide with
// the child's — the message on stderr tells them apart.
const (
	// ExitOK: success.
	ExitOK = 0
	// ExitFailure: a demo worker or another unexpected failure.
	ExitFailure = 1
	// ExitFree: "dlock status" found the lock free (held is ExitOK), as an
	// LSB init script's status action reports "not running".
	ExitFree = 3
	// ExitUsage (EX_USAGE): bad flags or arguments, an invalid key, TTL or
	// backend URL.
	ExitUsage = 64
	// ExitUnavailable (EX_UNAVAILABLE): the backend could not be opened or
	// reached, or failed while dlock was talking to it.
	ExitUnavailable = 69
	// ExitLost (EX_SOFTWARE): the lock was lost while the command ran; the
	// command was stopped.
	ExitLost = 70
	// ExitNotAcquired (EX_TEMPFAIL): the lock is held by another owner and
	// --try was given or --wait ran out.
	ExitNotAcquired = 75
	// ExitCannotRun: the command was found but could not be started.
	ExitCannotRun = 126
	// ExitNotFound: the command was not found.
	ExitNotFound = 127
)

// exitError carries an exit code and a one-line message for stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func exitf(code int, format string, args ...any) *exitError {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...)}
}

// clean returns err's text on one line without the "dlock: " prefixes the
// library's errors carry, ready to follow our own "dlock: ".
func clean(err error) string {
	s := err.Error()
	for strings.HasPrefix(s, "dlock: ") {
		s = strings.TrimPrefix(s, "dlock: ")
	}
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
}

const mainUsage = `dlock runs a command while holding a distributed lock.

Usage:
  dlock run [flags] KEY -- CMD [ARGS...]   run CMD while holding the lock KEY
  dlock run [flags] -c 'SHELL CMD' KEY     the same, with /bin/sh -c
  dlock hold [flags] KEY                   hold KEY until SIGINT/SIGTERM, no command
  dlock elect [flags] NAME -- CMD          run CMD while leader of election NAME
  dlock leader [flags] NAME                show the leader of NAME (exit 0, 3 none)
  dlock status [flags] KEY                 show who holds KEY (exit 0 held, 3 free)
  dlock list [flags] [PREFIX]              list the held locks under PREFIX
  dlock top [flags] [PREFIX]               a live view of the held locks and waiters
  dlock unlock --force --token T KEY       release another process's lock (operators)
  dlock unlock --force --any-owner KEY     release KEY whoever holds it (operators)
  dlock demo coupons [flags]               the race a lock prevents, live
  dlock version                            print the version
  dlock help [COMMAND]                     show help for a command

The backend is --backend URL, else $DLOCK_BACKEND, else the SQLite file
/run/lock/dlock/dlock.db (or under /var/lock, or $DLOCK_LOCK_DIR), shared
by every user and process of this host.

Exit codes: 0 ok (or CMD's own code), 3 free (status), 64 usage, 69 backend unavailable,
70 lock lost while CMD ran, 75 lock not acquired, 126/127 CMD cannot run /
not found, 128+N CMD killed by signal N. See docs/cli.md.
`

const versionUsage = `Usage: dlock version

Prints the module version dlock was built from ("(devel)" for a build from
a source tree).
`

const helpUsage = `Usage: dlock help [COMMAND]

Without COMMAND, prints the list of commands; with one, its usage and
flags. "dlock COMMAND -h" does the same.
`

// Main runs the dlock command with args (without the program name) and
// returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	quietLibraries()
	sio := stdio{in: stdin, out: stdout, err: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return ExitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		err = cmdRun(rest, sio)
	case "status":
		err = cmdStatus(rest, sio)
	case "hold":
		err = cmdHold(rest, sio)
	case "elect":
		err = cmdElect(rest, sio)
	case "leader":
		err = cmdLeader(rest, sio)
	case "unlock":
		err = cmdUnlock(rest, sio)
	case "list":
		err = cmdList(rest, sio)
	case "top":
		err = cmdTop(rest, sio)
	case "demo":
		err = cmdDemo(rest, sio)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "dlock", version())
	case "help", "-h", "-help", "--help":
		err = cmdHelp(rest, sio)
	default:
		fmt.Fprintf(stderr, "dlock: unknown command %q\n\n%s", cmd, mainUsage)
		return ExitUsage
	}
	return report(err, stderr)
}

// report prints err's message, if any, and returns its exit code.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		ee = &exitError{code: ExitFailure, msg: "dlock: " + clean(err)}
	}
	if ee.msg != "" {
		fmt.Fprintln(stderr, ee.msg)
	}
	return ee.code
}

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

func cmdHelp(args []string, io stdio) error {
	if len(args) == 0 {
		fmt.Fprint(io.out, mainUsage)
		return nil
	}
	switch args[0] {
	case "run":
		return cmdRun([]string{"-h"}, io)
	case "status":
		return cmdStatus([]string{"-h"}, io)
	case "hold":
		return cmdHold([]string{"-h"}, io)
	case "elect":
		return cmdElect([]string{"-h"}, io)
	case "leader":
		return cmdLeader([]string{"-h"}, io)
	case "unlock":
		return cmdUnlock([]string{"-h"}, io)
	case "list":
		return cmdList([]string{"-h"}, io)
	case "top":
		return cmdTop([]string{"-h"}, io)
	case "demo":
		return cmdDemo([]string{"-h"}, io)
	case "version":
		fmt.Fprint(io.out, versionUsage)
		return nil
	case "help":
		fmt.Fprint(io.out, helpUsage)
		return nil
	}
	return exitf(ExitUsage, "dlock: no help for unknown command %q (see 'dlock help')", args[0])
}

func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" {
		return "(devel)"
	}
	return bi.Main.Version
}

// newFlagSet returns a FlagSet that prints usage (to stdout for -h, to
// stderr for errors) and never exits by itself.
func newFlagSet(name, usage string, io stdio) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; -h prints usage to stdout and ends the command
// with success, a bad flag ends it with ExitUsage and a one-line message.
func parseFlags(fs *flag.FlagSet, args []string, sio stdio) (done bool, err error) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			fs.SetOutput(sio.out)
			fs.Usage()
			return true, nil
		}
	}
	// The flag package would print the error and the whole usage: say it
	// in one line instead, with a pointer to -h.
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err = fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, usageError(fs.Name(), "%s", err)
	}
	return false, nil
}

// oneKey returns the one argument left after fs's flags, a valid key that
// the usage calls what (KEY, NAME), or a usage error.
func oneKey(fs *flag.FlagSet, what string) (string, error) {
	switch fs.NArg() {
	case 0:
		return "", usageError(fs.Name(), "missing %s", what)
	case 1:
	default:
		return "", usageError(fs.Name(), "expected one %s, got %d arguments (flags go before %s)", what, fs.NArg(), what)
	}
	key := fs.Arg(0)
	if err := dlock.ValidateKey(key); err != nil {
		return "", usageError(fs.Name(), "%s", clean(err))
	}
	return key, nil
}

// usageError reports a usage problem in one line plus a pointer to -h.
func usageError(cmd, format string, args ...any) error {
	return exitf(ExitUsage, "dlock %s: %s (see 'dlock %s -h')", cmd, fmt.Sprintf(format, args...), cmd)
}

// durationValue is a flag.Value for a duration that also accepts a bare
// number of seconds ("10" = 10s).
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 || n > float64(1<<62)/float64(time.Second) {
			return fmt.Errorf("%q out of range", s)
		}
		*v.d = time.Duration(n * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 10s, 1m30s, 500ms)", s)
	}
	if d < 0 {
		return fmt.Errorf("%q is negative", s)
	}
	*v.d = d
	return nil
}

// durationFlag defines a duration flag that accepts "10s" or "10".
func durationFlag(fs *flag.FlagSet, name string, def time.Duration, usage string) *time.Duration {
	d := def
	fs.Var(durationValue{&d}, name, usage)
	return &d
}

// setFlags reports which flags were given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}
