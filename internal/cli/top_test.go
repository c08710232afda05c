//go:build unix

package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
	_ "github.com/dlock-go/dlock/redisdlock"
)

// holdKeys takes n keys prefix0 … prefix(n-1) on Redis with one Client,
// and makes a second Client wait for the first waiting of them; it returns
// the locks.
func holdKeys(t *testing.T, url, prefix string, n, waiting int) []*dlock.Lock {
	t.Helper()
	ctx := t.Context()
	c, err := dlock.Open(ctx, url, dlock.WithLockDefaults(dlock.WithMetadata("holder=test")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var locks []*dlock.Lock
	for i := range n {
		l, err := c.TryLock(ctx, fmt.Sprintf("%s%02d", prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		locks = append(locks, l)
	}
	w, err := dlock.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	for i := range waiting {
		go func() { _, _ = w.Lock(ctx, fmt.Sprintf("%s%02d", prefix, i)) }()
	}
	return locks
}

// dlock top --json prints a snapshot per interval with every held key, its
// holder and its waiters; a change shows in the next snapshot.
func TestTopJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rd := testserver.StartRedis(t)
	locks := holdKeys(t, rd.URL(), "top/", 50, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd, _, stderr := e.command(ctx, "top", "--backend", rd.URL(), "--json", "--interval", "200ms", "top/")
	cmd.Stdout = nil
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	lines.Buffer(nil, 1<<20)
	type snap struct {
		Keys []struct {
			Key     string `json:"key"`
			Holder  string `json:"holder"`
			Waiters int    `json:"waiters"`
		} `json:"keys"`
	}
	next := func() snap {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("dlock top --json ended: %v; stderr %q", lines.Err(), stderr.String())
		}
		var s snap
		if err := json.Unmarshal(lines.Bytes(), &s); err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		return s
	}
	// Until the waiters have queued.
	var s snap
	for deadline := time.Now().Add(20 * time.Second); ; {
		s = next()
		waiters := 0
		for _, k := range s.Keys {
			waiters += k.Waiters
		}
		if len(s.Keys) == 50 && waiters == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot: %d keys, %d waiters; want 50 and 3", len(s.Keys), waiters)
		}
	}
	if s.Keys[10].Key != "top/10" || s.Keys[10].Holder != "holder=test" {
		t.Errorf("key 10 = %+v, want top/10 held by holder=test", s.Keys[10])
	}
	_ = locks[49].Unlock(ctx)
	changed := time.Now()
	for len(next().Keys) != 49 {
		if time.Since(changed) > 5*time.Second {
			t.Fatal("the release of top/49 did not show within 5 s")
		}
	}
	if since := time.Since(changed); since > time.Second {
		t.Errorf("the release showed after %v, want within 1 s", since)
	}
}

// tmuxRun starts a tmux server and session of its own running command in
// a w×h terminal; it returns a function that captures the screen, and the
// server's socket.
func tmuxRun(t *testing.T, w, h int, command string) (capture func() string, socket string) {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("DLOCK_TEST_REQUIRE_SERVERS") != "" {
			t.Fatal("tmux not found (scripts/install-test-deps.sh installs it)")
		}
		t.Skip("tmux not found")
	}
	socket = t.TempDir() + "/tmux.sock"
	const session = "dlocktop"
	run := func(args ...string) string {
		out, err := exec.Command(tmux, append([]string{"-S", socket}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	run("new-session", "-d", "-s", session, "-x", fmt.Sprint(w), "-y", fmt.Sprint(h), command)
	t.Cleanup(func() { _ = exec.Command(tmux, "-S", socket, "kill-server").Run() })
	capture = func() string { return run("capture-pane", "-p", "-t", session) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screen:\n%s", capture())
		}
	})
	return capture, socket
}

// dlock top on a terminal (tmux) draws the held keys, their holders and
// waiters, follows a change within a second, and quits on q.
func TestTopTerminal(t *testing.T) {
	t.Parallel()
	rd := testserver.StartRedis(t)
	locks := holdKeys(t, rd.URL(), "tty/", 50, 2)
	capture, socket := tmuxRun(t, 160, 70, fmt.Sprintf("%s top --backend %s --interval 200ms tty/; sleep 30", dlockBin, rd.URL()))
	waitScreen := func(what string, within time.Duration, ok func(string) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			if ok(capture()) {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("the screen never showed %s within %v", what, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitScreen("50 held keys and 2 waiters", 20*time.Second, func(s string) bool {
		return strings.Contains(s, "50 held, 2 waiting") && strings.Contains(s, "tty/49") && strings.Contains(s, "holder=test")
	})
	_ = locks[0].Unlock(t.Context())
	// The key's waiter takes it: still 50 held, one waiter fewer.
	if took := waitScreen("the hand-off of tty/00", 10*time.Second, func(s string) bool { return strings.Contains(s, "50 held, 1 waiting") }); took > time.Second {
		t.Errorf("the change showed after %v, want within 1 s", took)
	}
	_ = locks[49].Unlock(t.Context())
	if took := waitScreen("49 held keys", 10*time.Second, func(s string) bool { return strings.Contains(s, "49 held") && !strings.Contains(s, "tty/49") }); took > time.Second {
		t.Errorf("the release showed after %v, want within 1 s", took)
	}
	tmux, _ := exec.LookPath("tmux")
	if out, err := exec.Command(tmux, "-S", socket, "send-keys", "-t", "dlocktop", "q").CombinedOutput(); err != nil {
		t.Fatalf("send-keys: %v: %s", err, out)
	}
	// After q the alternate screen is gone, and the shell sleeps.
	waitScreen("the screen after q", 10*time.Second, func(s string) bool { return !strings.Contains(s, "q quits") })
}

// dlock top's usage errors.
func TestTopUsage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, args := range [][]string{
		{"top", "a", "b"},
		{"top", "--interval", "1ms"},
		{"top", "--count", "-1"},
	} {
		if r := e.run(20*time.Second, args...); r.code != ExitUsage {
			t.Errorf("%v: exit %d (stderr %q), want %d", args, r.code, r.stderr, ExitUsage)
		}
	}
	// Not a terminal, without --json: plain snapshots, here one.
	if r := e.run(20*time.Second, "top", "--count", "1"); r.code != 0 || !strings.Contains(r.stdout, "KEY") || !strings.Contains(r.stdout, "(no held locks)") {
		t.Errorf("top --count 1: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
