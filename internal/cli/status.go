package cli

import (
	"context"
	"encoding/json"
	"errors"
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
	key, err := oneKey(fs, "KEY")
	if err != nil {
		return err
	}

	ctx, stop := signalContext()
	defer stop()

	// One bound for opening and asking: --connect-timeout.
	ictx, icancel := context.WithTimeout(ctx, *bf.timeout)
	defer icancel()
	c, shown, err := bf.open(ictx)
	if err != nil {
		return err
	}
	in, err := c.Inspect(ictx, key)
	var h *dlock.Holders
	if err == nil && in.Held {
		// The grants of a semaphore or RW key, on a backend with shared
		// leases.
		if hs, herr := c.Holders(ictx, key); herr == nil && len(hs.Holders) > 0 && hs.Holders[0].Shared {
			h = &hs
		} else if herr != nil && !errors.Is(herr, dlock.ErrUnsupported) {
			err = herr
		}
	}
	if err != nil {
		err = backendError(ctx, ictx, err, fmt.Sprintf("status of %q on %s", key, shown))
		closeClient(c, err, *bf.timeout)
		return err
	}
	defer c.Close()
	if *asJSON {
		b, err := statusJSON(in, h)
		if err != nil {
			return exitf(ExitFailure, "dlock: status: %v", err)
		}
		fmt.Fprintf(sio.out, "%s\n", b)
	} else {
		fmt.Fprint(sio.out, formatStatus(in, h))
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
	// The grants of a key with shared holders (a semaphore's permits, an
	// RW lock's readers).
	Holders        []jsonHolder `json:"holders,omitempty"`
	Limit          int          `json:"limit,omitempty"`
	WritersWaiting int          `json:"exclusive_waiting,omitempty"`
}

// jsonHolder is one shared grant in status --json.
type jsonHolder struct {
	Fence       uint64 `json:"fence"`
	ExpiresInMS int64  `json:"expires_in_ms"`
	Holder      string `json:"holder,omitempty"`
}

// statusJSON renders Inspect's answer, and the shared grants h (or nil),
// as one line of JSON.
func statusJSON(in dlock.Info, h *dlock.Holders) ([]byte, error) {
	js := jsonStatus{Key: in.Key, Held: in.Held, Fence: in.Fence}
	if h != nil {
		js.Limit, js.WritersWaiting = h.Limit, h.WritersWaiting
		for _, g := range h.Holders {
			js.Holders = append(js.Holders, jsonHolder{Fence: g.Fence, ExpiresInMS: g.TTL.Milliseconds(), Holder: g.Metadata})
		}
	}
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

// formatStatus renders Inspect's answer, and the shared grants h (or
// nil), as "name: value" lines.
func formatStatus(in dlock.Info, h *dlock.Holders) string {
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
	if h != nil {
		state := fmt.Sprintf("held by %d shared holders", len(h.Holders))
		if h.Limit > 0 {
			state = fmt.Sprintf("held by %d of %d permits", len(h.Holders), h.Limit)
		}
		line("state", "%s", state)
		for _, g := range h.Holders {
			who := oneLine(g.Metadata)
			if who == "" {
				who = "(unknown)"
			}
			line("holder", "%s (fence %d, expires in %v)", who, g.Fence, roundDuration(g.TTL))
		}
		if h.WritersWaiting > 0 {
			line("waiting", "%d exclusive (new shared holders wait for them)", h.WritersWaiting)
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
