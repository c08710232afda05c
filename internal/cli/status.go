package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dlock-go/dlock"
)

const statusUsage = `Usage: dlock status [flags] KEY

Shows whether the lock KEY is held and, if so, by whom (host, pid, user and
command of a "dlock run"), with which fencing token and for how much longer;
or "free", with the last fence granted when the backend keeps it. Exits 0
when the lock is held, 3 when it is free (64 usage, 69 backend unavailable).
With --json, prints one JSON object instead:

  {"key":"job","held":true,"fence":17,"expires_in_ms":28000,"holder":"host=web1 pid=4242 user=ops cmd=job.sh","waiters":2}
`

func cmdStatus(args []string, sio stdio) error {
	fs := newFlagSet("status", statusUsage, sio)
	bf := addBackendFlags(fs)
	bf.shared = true
	asJSON := fs.Bool("json", false, "print one JSON object (key, held, fence, expires_in_ms, holder, waiters)")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	switch fs.NArg() {
	case 0:
		return usageError("status", "missing KEY")
	case 1:
	default:
		return usageError("status", "expected one KEY, got %d arguments (flags go before KEY)", fs.NArg())
	}
	key := fs.Arg(0)
	if err := dlock.ValidateKey(key); err != nil {
		return usageError("status", "%s", clean(err))
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs, stop := notify(waitSignals...)
	defer stop()
	go func() {
		select {
		case s := <-sigs:
			cancel(&signalError{sig: s})
		case <-ctx.Done():
		}
	}()

	// One bound for opening and asking: --connect-timeout.
	ictx, icancel := context.WithTimeout(ctx, *bf.timeout)
	defer icancel()
	c, shown, err := bf.open(ictx)
	if err != nil {
		return err
	}
	in, err := c.Inspect(ictx, key)
	if err != nil {
		err = backendError(ctx, ictx, err, fmt.Sprintf("status of %q on %s", key, shown))
		closeClient(c, err, *bf.timeout)
		return err
	}
	defer c.Close()
	if *asJSON {
		b, err := statusJSON(in)
		if err != nil {
			return exitf(ExitFailure, "dlock: status: %v", err)
		}
		fmt.Fprintf(sio.out, "%s\n", b)
	} else {
		fmt.Fprint(sio.out, formatStatus(in))
	}
	if !in.Held {
		return &exitError{code: ExitFree}
	}
	return nil
}

// jsonStatus is what status --json prints. Fields without a value (no
// fence kept, unknown waiters, a free key's holder) are left out.
type jsonStatus struct {
	Key         string `json:"key"`
	Held        bool   `json:"held"`
	Fence       uint64 `json:"fence,omitempty"`
	ExpiresInMS *int64 `json:"expires_in_ms,omitempty"`
	Holder      string `json:"holder,omitempty"`
	Waiters     *int   `json:"waiters,omitempty"`
}

// statusJSON renders Inspect's answer as one line of JSON.
func statusJSON(in dlock.Info) ([]byte, error) {
	js := jsonStatus{Key: in.Key, Held: in.Held, Fence: in.Fence}
	if in.Held {
		js.Holder = in.Metadata
		if in.TTL > 0 {
			ms := in.TTL.Milliseconds()
			js.ExpiresInMS = &ms
		}
		if in.Waiters >= 0 {
			w := in.Waiters
			js.Waiters = &w
		}
	}
	return json.Marshal(js)
}

// formatStatus renders Inspect's answer as "name: value" lines.
func formatStatus(in dlock.Info) string {
	var b strings.Builder
	line := func(name, format string, args ...any) {
		fmt.Fprintf(&b, "%-8s %s\n", name+":", fmt.Sprintf(format, args...))
	}
	line("key", "%s", oneLine(in.Key))
	if !in.Held {
		line("state", "free")
		if in.Fence > 0 {
			line("fence", "%d (last granted)", in.Fence)
		}
		return b.String()
	}
	line("state", "held")
	if in.Metadata != "" {
		line("holder", "%s", oneLine(in.Metadata))
	} else {
		line("holder", "(unknown)")
	}
	if in.Fence > 0 {
		line("fence", "%d", in.Fence)
	}
	if in.TTL > 0 {
		line("expires", "in %v unless refreshed", roundDuration(in.TTL))
	}
	if in.Waiters >= 0 {
		line("waiters", "%d", in.Waiters)
	}
	return b.String()
}
