//go:build unix

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlock-go/dlock/internal/testserver"
)

// electScript is a CMD for dlock elect: it notes an overlap with another
// leader's CMD, writes "VALUE FENCE" to $0.up and its pid to $0.pid, and
// runs until killed.
const electScript = `if [ -e "$1" ]; then echo overlap >> "$2"; fi; : > "$1"; echo $$ > "$0.pid"; echo "$DLOCK_KEY $DLOCK_FENCE" > "$0.up"; trap 'rm -f "$1"; exit 0' TERM; while :; do sleep 0.05; done`

// Two candidates on one election: one runs CMD; killing its CMD ends its
// term (dlock exits with CMD's status) and the other is elected with a
// higher term. dlock leader shows each with its term.
func TestElectHandover(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	busy, overlap := e.path("busy"), e.path("overlap")
	procs := map[string]func() result{}
	for _, v := range []string{"a", "b"} {
		_, wait := e.start(60*time.Second, "elect", "--value", v, "sched", "--", "sh", "-c", electScript, e.path(v), busy, overlap)
		procs[v] = wait
	}
	deadline := time.Now().Add(20 * time.Second)
	first := ""
	for first == "" {
		for _, v := range []string{"a", "b"} {
			if b, err := os.ReadFile(e.path(v) + ".up"); err == nil && len(b) > 0 {
				first = v
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no candidate ran CMD within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	second := map[string]string{"a": "b", "b": "a"}[first]
	up := strings.Fields(e.waitForFile(e.path(first)+".up", 5*time.Second))
	if len(up) != 2 || up[0] != "sched" {
		t.Fatalf("first leader's CMD saw %q, want DLOCK_KEY sched and a fence", up)
	}
	r := e.run(20*time.Second, "leader", "sched")
	if r.code != 0 || !strings.Contains(r.stdout, "leader:   "+first) || !strings.Contains(r.stdout, "term:     "+up[1]) {
		t.Errorf("leader: exit %d, stdout %q; want leader %s, term %s", r.code, r.stdout, first, up[1])
	}
	r = e.run(20*time.Second, "leader", "--json", "sched")
	var js jsonLeader
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || r.code != 0 || !js.Held || js.Value != first || strconv.FormatUint(js.Term, 10) != up[1] || js.ExpiresInMS == nil {
		t.Errorf("leader --json: exit %d, stdout %q (%v); want held by %s in term %s", r.code, r.stdout, err, first, up[1])
	}
	if _, err := os.Stat(e.path(second) + ".up"); err == nil {
		t.Errorf("both candidates ran CMD")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(e.waitForFile(e.path(first)+".pid", 5*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(busy)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if res := procs[first](); res.code != 128+int(syscall.SIGKILL) {
		t.Errorf("first leader: exit %d, stderr %q; want CMD's %d", res.code, res.stderr, 128+int(syscall.SIGKILL))
	}
	up2 := strings.Fields(e.waitForFile(e.path(second)+".up", 20*time.Second))
	f1, _ := strconv.ParseUint(up[1], 10, 64)
	if len(up2) != 2 {
		t.Fatalf("second leader's CMD saw %q", up2)
	}
	if f2, _ := strconv.ParseUint(up2[1], 10, 64); f1 == 0 || f2 <= f1 {
		t.Errorf("terms: first %q, second %q; want the second higher", up, up2)
	}
	if b, _ := os.ReadFile(overlap); len(b) > 0 {
		t.Errorf("two leaders' CMDs overlapped")
	}
	pid2, err := strconv.Atoi(strings.TrimSpace(e.waitForFile(e.path(second)+".pid", 5*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid2, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if res := procs[second](); res.code != 0 {
		t.Errorf("second leader: exit %d, stderr %q; want CMD's 0", res.code, res.stderr)
	}
	if r := e.run(20*time.Second, "leader", "--json", "sched"); r.code != ExitFree || !strings.Contains(r.stdout, `"held":false`) {
		t.Errorf("leader after both resigned: exit %d, stdout %q; want %d and held false", r.code, r.stdout, ExitFree)
	}
}

// --loop campaigns again after each term: a CMD that exits at once runs
// again and again with increasing terms, until SIGTERM, after which dlock
// has resigned.
func TestElectLoop(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	log := e.path("log")
	proc, wait := e.start(60*time.Second, "elect", "--loop", "-c", `echo $DLOCK_FENCE >> "`+log+`"`, "sched")
	deadline := time.Now().Add(20 * time.Second)
	var terms []string
	for len(terms) < 3 {
		b, _ := os.ReadFile(log)
		terms = lines(string(b))
		if time.Now().After(deadline) {
			t.Fatalf("terms after 20s: %q, want 3", terms)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopLoop(t, proc, wait, log)
	if r := e.run(20*time.Second, "leader", "sched"); r.code != ExitFree || !strings.Contains(r.stdout, "none") {
		t.Errorf("leader after elect --loop ended: exit %d, stdout %q; want %d, none", r.code, r.stdout, ExitFree)
	}
}

// stopLoop ends an elect --loop with SIGTERM, checks its exit, and checks
// that the terms its CMD wrote to log, one per line, strictly increase.
func stopLoop(t *testing.T, proc *exec.Cmd, wait func() result, log string) {
	t.Helper()
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	res := wait()
	if res.code != 0 && res.code != 128+int(syscall.SIGTERM) {
		t.Errorf("elect --loop after SIGTERM: exit %d, stderr %q; want 0 or %d", res.code, res.stderr, 128+int(syscall.SIGTERM))
	}
	b, _ := os.ReadFile(log)
	all := lines(string(b))
	var prev uint64
	for i, s := range all {
		f, err := strconv.ParseUint(s, 10, 64)
		if err != nil || f <= prev {
			t.Fatalf("terms %q: term %d (%q) not above the one before", all, i, s)
		}
		prev = f
	}
}

// --loop campaigns on one client for all its terms: on Redis, the server
// accepts no new connection per term (a new client per term would dial at
// least once each), and the terms still increase.
func TestElectLoopOneConnection(t *testing.T) {
	t.Parallel()
	rd := testserver.StartRedis(t)
	e := newEnv(t)
	log := e.path("log")
	proc, wait := e.start(60*time.Second, "elect", "--loop", "--backend", rd.URL(), "-c", `echo $DLOCK_FENCE >> "`+log+`"`, "sched")
	deadline := time.Now().Add(30 * time.Second)
	terms := func(n int) []string {
		t.Helper()
		for {
			b, _ := os.ReadFile(log)
			got := lines(string(b))
			if len(got) >= n {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("terms: %q, want %d within 30s", got, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Each call dials one connection of its own, counted as well.
	accepted := func() int {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		v, err := rd.Info(ctx, "stats", "total_connections_received")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("total_connections_received %q: %v", v, err)
		}
		return n
	}
	first := len(terms(3))
	before := accepted()
	const more = 10
	last := len(terms(first + more))
	after := accepted()
	// Slack of 2 for the pool growing (a refresh beside a campaign).
	if dialed := after - before - 1; dialed > 2 {
		t.Errorf("%d new connections to Redis over %d terms; want one client for all terms", dialed, last-first)
	}
	stopLoop(t, proc, wait, log)
	if r := e.run(20*time.Second, "leader", "--backend", rd.URL(), "sched"); r.code != ExitFree || !strings.Contains(r.stdout, "none") {
		t.Errorf("leader after elect --loop ended: exit %d, stdout %q; want %d, none", r.code, r.stdout, ExitFree)
	}
}

// A campaign on a client that was closed, which refuses every request,
// opens a new client and campaigns on it instead.
func TestElectReopensClosedClient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	backend := (&url.URL{Scheme: "sqlite", Path: filepath.ToSlash(filepath.Join(t.TempDir(), "locks.db"))}).String()
	timeout := 5 * time.Second
	var stderr bytes.Buffer
	r := &runner{
		key: "sched", elect: true, value: "v", argv: []string{"true"},
		bf:  &backendFlags{url: backend, given: true, timeout: &timeout, shared: true},
		sio: stdio{out: &stderr, err: &stderr},
	}
	old, _, err := r.bf.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	c, l, err := r.acquire(ctx, old)
	if err != nil {
		t.Fatalf("campaign on a closed client: %v (stderr %q); want a new client", err, stderr.String())
	}
	defer c.Close()
	if c == old || l.Fence() == 0 {
		t.Errorf("campaign on a closed client: same client %v, fence %d; want a new client and a term", c == old, l.Fence())
	}
	if !strings.Contains(stderr.String(), "connecting again") {
		t.Errorf("stderr %q; want a warning that dlock connects again", stderr.String())
	}
	if err := l.Unlock(ctx); err != nil {
		t.Error(err)
	}
}

// leader --watch --json prints one object per change: no leader, then a
// leader, then the next one.
func TestLeaderWatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	out, err := os.Create(e.path("watch"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	ctx := t.Context()
	watch, _, stderr := e.command(ctx, "leader", "--watch", "--interval", "200ms", "--json", "sched")
	watch.Stdout = out
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watch.Process.Kill(); _ = watch.Wait() })
	e.waitForFile(e.path("watch"), 20*time.Second)
	if r := e.run(30*time.Second, "elect", "--value", "one", "sched", "--", "sleep", "1.5"); r.code != 0 {
		t.Fatalf("elect one: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := e.run(30*time.Second, "elect", "--value", "two\nlines", "sched", "--", "sleep", "1.5"); r.code != 0 {
		t.Fatalf("elect two: exit %d, stderr %q", r.code, r.stderr)
	}
	var got []jsonLeader
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(e.path("watch"))
		got = got[:0]
		for _, l := range lines(string(b)) {
			var js jsonLeader
			if err := json.Unmarshal([]byte(l), &js); err != nil {
				t.Fatalf("watch line %q: %v", l, err)
			}
			got = append(got, js)
		}
		if n := len(got); n >= 4 && !got[n-1].Held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch output after 20s: %+v; want none, one, (none,) two, none", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var values []string
	var last uint64
	for _, js := range got {
		if js.Held {
			values = append(values, js.Value)
			if js.Term <= last {
				t.Errorf("terms not increasing: %+v", got)
			}
			last = js.Term
		}
	}
	if strings.Join(values, ",") != `one,two\nlines` || got[0].Held {
		t.Errorf("watch: %+v; want no leader, then one, then two (value on one line)", got)
	}
	if err := watch.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := watch.Wait(); err != nil {
		t.Errorf("leader --watch after SIGTERM: %v (stderr %q), want exit 0", err, stderr)
	}
}

func TestElectFlags(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, args := range [][]string{
		{"elect", "--try", "k", "--", "true"},
		{"elect", "--limit", "2", "k", "--", "true"},
		{"elect", "k"},
		{"leader"},
		{"leader", "--watch", "--interval", "1ms", "k"},
		{"leader", "--interval", "0s", "k"},
	} {
		if r := e.run(10*time.Second, args...); r.code != ExitUsage || len(lines(r.stderr)) != 1 {
			t.Errorf("%q: exit %d, stderr %q; want %d in one line", args, r.code, r.stderr, ExitUsage)
		}
	}
}
