package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dlock-go/dlock"
)

const leaderUsage = `Usage: dlock leader [flags] NAME

Shows the current leader of the election NAME: its value (what
"dlock elect --value" stored), its term (fence) and how long its lease
runs unless refreshed; or "none". Exits 0 when there is a leader, 3 when
there is none (64 usage, 69 backend unavailable), as "dlock status" does
for a held or free key. With --json, prints one JSON object:

  {"election":"sched","held":true,"value":"host=web1 pid=4242 user=ops cmd=sched.sh","term":17,"expires_in_ms":28000}

With --watch, prints the current leader and then one line per change (a
new leader, a new value, no leader), in term order, until SIGINT or
SIGTERM (exit 0); with --json, one object per line (without
expires_in_ms). It reads the election at least every --interval (default
1s), and at once on a release notification where the backend sends them;
a shorter interval sees shorter terms on MySQL, which sends none.
`

// jsonLeader is what leader --json prints.
type jsonLeader struct {
	Election    string `json:"election"`
	Held        bool   `json:"held"`
	Value       string `json:"value,omitempty"`
	Term        uint64 `json:"term,omitempty"`
	ExpiresInMS *int64 `json:"expires_in_ms,omitempty"`
}

func cmdLeader(args []string, sio stdio) error {
	fs := newFlagSet("leader", leaderUsage, sio)
	bf := addBackendFlags(fs)
	bf.shared = true
	asJSON := fs.Bool("json", false, "print JSON objects (election, held, value, term, expires_in_ms)")
	watch := fs.Bool("watch", false, "print each change of leader until SIGINT or SIGTERM")
	interval := fs.Duration("interval", dlock.ObserveInterval, "with --watch, the longest gap between reads of the election (at least 10ms)")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	if *interval < dlock.MinObserveInterval {
		return usageError("leader", "--interval %v: want at least %v", *interval, dlock.MinObserveInterval)
	}
	name, err := oneKey(fs, "NAME")
	if err != nil {
		return err
	}

	ctx, stop := signalContext()
	defer stop()

	ictx, icancel := context.WithTimeout(ctx, *bf.timeout)
	defer icancel()
	c, shown, err := bf.open(ictx)
	if err != nil {
		return err
	}
	// Read the key once, bounded: a backend that does not answer fails
	// here rather than leaving --watch silent.
	in, err := c.Inspect(ictx, name)
	if err != nil {
		err = backendError(ctx, ictx, err, fmt.Sprintf("leader of %q on %s", name, shown))
		closeClient(c, err, *bf.timeout)
		return err
	}
	defer c.Close()
	if !*watch {
		l := dlock.Leader{Held: in.Held, Value: in.Metadata, Fence: in.Fence}
		printLeader(sio, name, l, in.TTL, *asJSON)
		if !in.Held {
			return &exitError{code: ExitFree}
		}
		return nil
	}
	for l := range c.Election(name).Observe(ctx, dlock.WithObserveInterval(*interval)) {
		printLeader(sio, name, l, -1, *asJSON)
	}
	if signalCause(ctx) != nil {
		return nil
	}
	return exitf(ExitUnavailable, "dlock: leader of %q: watching ended", name)
}

// printLeader prints l, with its remaining lease ttl when ttl > 0 (-1:
// one line for --watch).
func printLeader(sio stdio, name string, l dlock.Leader, ttl time.Duration, asJSON bool) {
	if asJSON {
		js := jsonLeader{Election: name, Held: l.Held}
		if l.Held {
			js.Value, js.Term = l.Value, l.Fence
			if ttl > 0 {
				ms := ttl.Milliseconds()
				js.ExpiresInMS = &ms
			}
		}
		b, _ := json.Marshal(js)
		fmt.Fprintf(sio.out, "%s\n", b)
		return
	}
	value := oneLine(l.Value)
	if value == "" {
		value = "(no value)"
	}
	if ttl < 0 {
		if l.Held {
			fmt.Fprintf(sio.out, "term %d: %s\n", l.Fence, value)
		} else {
			fmt.Fprintln(sio.out, "no leader")
		}
		return
	}
	line := func(k, format string, args ...any) {
		fmt.Fprintf(sio.out, "%-9s %s\n", k+":", fmt.Sprintf(format, args...))
	}
	line("election", "%s", oneLine(name))
	if !l.Held {
		line("leader", "none")
		return
	}
	line("leader", "%s", value)
	line("term", "%d", l.Fence)
	if ttl > 0 {
		line("expires", "in %v unless refreshed", roundDuration(ttl))
	}
}
