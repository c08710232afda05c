package cli

import (
	"context"
	"errors"
	"os"
	"os/signal"
)

// signalError is the cause of a context cancelled by a signal to dlock.
type signalError struct {
	sig os.Signal
}

func (e *signalError) Error() string { return "interrupted by " + signalName(e.sig) }

// code is the exit code for a dlock ended by this signal: 128+N, as a
// shell reports a process killed by signal N.
func (e *signalError) code() int { return 128 + signalNum(e.sig) }

// signalCause returns the signal that cancelled ctx, or nil.
func signalCause(ctx context.Context) *signalError {
	var se *signalError
	if errors.As(context.Cause(ctx), &se) {
		return se
	}
	return nil
}

// notify relays sigs to a new channel, leaving out the signals that were
// ignored when dlock started (e.g. SIGINT for a background job of a script,
// SIGHUP under nohup): catching those would stop them being ignored, for
// dlock and for the command it starts. stop undoes it.
func notify(sigs ...os.Signal) (ch chan os.Signal, stop func()) {
	ch = make(chan os.Signal, 8)
	var use []os.Signal
	for _, s := range sigs {
		if !signal.Ignored(s) {
			use = append(use, s)
		}
	}
	if len(use) > 0 {
		signal.Notify(ch, use...)
	}
	return ch, func() { signal.Stop(ch) }
}

// signalContext returns a context that the first of waitSignals cancels,
// with a signalError as its cause, and the function that stops listening
// and cancels it.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs, stop := notify(waitSignals...)
	go func() {
		select {
		case s := <-sigs:
			cancel(&signalError{sig: s})
		case <-ctx.Done():
		}
	}()
	return ctx, func() { stop(); cancel(nil) }
}
