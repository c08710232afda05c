//go:build unix

package cli

import (
	"strings"
	"testing"
	"time"
)

// holdWhile starts `dlock run FLAGS -c 'echo > MARK; sleep 4' KEY` and
// waits until it holds the key.
func (e *testEnv) holdWhile(mark string, flags ...string) func() result {
	e.t.Helper()
	args := append([]string{"run"}, flags...)
	args = append(args, "-c", "echo held > "+e.path(mark)+"; sleep 4", "api")
	_, wait := e.start(30*time.Second, args...)
	e.waitForFile(e.path(mark), 20*time.Second)
	return wait
}

func TestRunLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	waits := []func() result{e.holdWhile("a", "--limit", "2"), e.holdWhile("b", "--limit", "2")}
	r := e.run(20*time.Second, "run", "--limit", "2", "--try", "api", "--", "true")
	if r.code != ExitNotAcquired || !strings.Contains(r.stderr, "2 of 2 permit holders") {
		t.Errorf("third --limit 2 --try: exit %d, stderr %q; want %d naming 2 of 2 permit holders", r.code, r.stderr, ExitNotAcquired)
	}
	st := e.run(20*time.Second, "status", "api")
	if st.code != 0 || !strings.Contains(st.stdout, "held by 2 of 2 permits") || strings.Count(st.stdout, "cmd=sh") != 2 {
		t.Errorf("status: exit %d, stdout %q; want both permit holders listed", st.code, st.stdout)
	}
	js := e.run(20*time.Second, "status", "--json", "api")
	if js.code != 0 || !strings.Contains(js.stdout, `"limit":2`) || strings.Count(js.stdout, `"fence":`) != 3 {
		t.Errorf("status --json: exit %d, stdout %q; want the limit and both holders", js.code, js.stdout)
	}
	r = e.run(20*time.Second, "run", "--limit", "3", "--try", "api", "--", "true")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "limit") {
		t.Errorf("--limit 3 on a key held with limit 2: exit %d, stderr %q; want %d naming the limit", r.code, r.stderr, ExitUsage)
	}
	r = e.run(20*time.Second, "run", "--try", "api", "--", "true")
	if r.code != ExitNotAcquired {
		t.Errorf("plain --try beside permits: exit %d, stderr %q; want %d", r.code, r.stderr, ExitNotAcquired)
	}
	for _, w := range waits {
		if res := w(); res.code != 0 {
			t.Errorf("permit holder: exit %d, stderr %q", res.code, res.stderr)
		}
	}
	if r := e.run(20*time.Second, "run", "--limit", "3", "--try", "api", "--", "true"); r.code != 0 {
		t.Errorf("--limit 3 once the permits are back: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestRunShared(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	waits := []func() result{e.holdWhile("a", "--shared"), e.holdWhile("b", "--shared")}
	if r := e.run(20*time.Second, "run", "--try", "api", "--", "true"); r.code != ExitNotAcquired || !strings.Contains(r.stderr, "2 shared holders") {
		t.Errorf("exclusive --try beside two shared: exit %d, stderr %q; want %d naming 2 shared holders", r.code, r.stderr, ExitNotAcquired)
	}
	if r := e.run(20*time.Second, "run", "--shared", "--try", "api", "--", "true"); r.code != 0 {
		t.Errorf("third --shared --try: exit %d, stderr %q; want 0", r.code, r.stderr)
	}
	// An exclusive run waits for both and runs after them.
	start := time.Now()
	if r := e.run(30*time.Second, "run", "api", "--", "true"); r.code != 0 {
		t.Errorf("waiting exclusive run: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, w := range waits {
		if res := w(); res.code != 0 {
			t.Errorf("shared holder: exit %d, stderr %q", res.code, res.stderr)
		}
	}
	if time.Since(start) < time.Second {
		t.Errorf("the exclusive run did not wait for the shared holders")
	}
}

func TestRunFamilyFlags(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, args := range [][]string{
		{"run", "--limit", "0", "k", "--", "true"},
		{"run", "--limit", "-2", "k", "--", "true"},
		{"run", "--limit", "2", "--shared", "k", "--", "true"},
	} {
		if r := e.run(10*time.Second, args...); r.code != ExitUsage || len(lines(r.stderr)) != 1 {
			t.Errorf("%q: exit %d, stderr %q; want %d in one line", args, r.code, r.stderr, ExitUsage)
		}
	}
}
