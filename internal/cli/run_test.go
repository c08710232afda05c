//go:build unix

package cli

import (
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunTryContention(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, waitA := e.start(30*time.Second, "run", "--try", "job", "--", "sleep", "2")
	_, waitB := e.start(30*time.Second, "run", "--try", "job", "--", "sleep", "2")
	a, b := waitA(), waitB()
	if a.code == ExitNotAcquired {
		a, b = b, a
	}
	if a.code != 0 || b.code != ExitNotAcquired {
		t.Fatalf("exit codes: got %d and %d, want 0 and %d (stderr: %q, %q)", a.code, b.code, ExitNotAcquired, a.stderr, b.stderr)
	}
	if got := lines(b.stderr); len(got) != 1 || !strings.Contains(got[0], `"job"`) || !strings.Contains(got[0], "not acquired") {
		t.Errorf("loser's stderr: got %q, want one line naming \"job\" and saying not acquired", b.stderr)
	}
	if !strings.Contains(b.stderr, "cmd=sleep") {
		t.Errorf("loser's stderr: got %q, want the holder's metadata (cmd=sleep)", b.stderr)
	}
}

// A dlock killed with SIGKILL cannot release: the next owner gets the key
// when the lease runs out, about one TTL later.
func TestRunKilledHolderExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pidFile := e.path("child.pid")
	holder, _ := e.start(30*time.Second, "run", "--ttl", "2s", "job", "--", "sh", "-c", `echo $$ > "$0"; exec sleep 60`, pidFile)
	childPID, err := strconv.Atoi(strings.TrimSpace(e.waitForFile(pidFile, 10*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(childPID, syscall.SIGKILL) })
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	r := e.run(20*time.Second, "run", "--wait", "10s", "job", "--", "true")
	took := time.Since(killed)
	t.Logf("the waiter got the lock %v after the holder was killed (TTL 2s)", took)
	if r.code != 0 {
		t.Fatalf("waiter: got exit %d, want 0 (stderr %q)", r.code, r.stderr)
	}
	// A correctness deadline (TTL 2s plus generous slack), not a benchmark.
	if took > 6*time.Second {
		t.Errorf("waiter got the lock %v after the kill, want within about the 2s TTL", took)
	}
	if runtime.GOOS == "linux" && !processGone(childPID, 5*time.Second) {
		t.Errorf("the command (pid %d) outlived its killed dlock", childPID)
	}
}

// processGone waits until pid no longer runs (a zombie counts as gone).
func processGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true
		}
		if _, after, ok := strings.Cut(string(b), ") "); ok && strings.HasPrefix(after, "Z") {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Loss is made real: the dlock process is frozen (SIGSTOP) past its TTL, so
// it cannot refresh; another client takes the key; after SIGCONT dlock finds
// its validity deadline passed, sends SIGTERM, then SIGKILL to a command
// that ignores it, and exits with ExitLost.
func TestRunLostLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ready, termed := e.path("ready"), e.path("termed")
	script := `trap 'echo term >> "$1"' TERM; echo up > "$0"; while :; do sleep 0.1; done`
	holder, wait := e.start(30*time.Second, "run", "--ttl", "1s", "--grace", "500ms", "job", "--", "sh", "-c", script, ready, termed)
	e.waitForFile(ready, 10*time.Second)
	if err := holder.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	other := e.run(20*time.Second, "run", "--wait", "10s", "job", "--", "sh", "-c", "echo $DLOCK_FENCE")
	if other.code != 0 {
		_ = holder.Process.Signal(syscall.SIGCONT)
		t.Fatalf("second owner: got exit %d, want 0 (stderr %q)", other.code, other.stderr)
	}
	if err := holder.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	r := wait()
	if r.code != ExitLost {
		t.Fatalf("stale holder: got exit %d, want %d (stderr %q)", r.code, ExitLost, r.stderr)
	}
	for _, want := range []string{`lost lock "job"`, "SIGTERM", "SIGKILL"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stale holder's stderr: got %q, want it to contain %q", r.stderr, want)
		}
	}
	if got := e.waitForFile(termed, 5*time.Second); !strings.Contains(got, "term") {
		t.Errorf("command did not get SIGTERM: %q", got)
	}
}

func TestRunForwardsSignals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		sig  syscall.Signal
		trap string
		want int
	}{
		{"SIGTERM", syscall.SIGTERM, "TERM", 3},
		{"SIGINT", syscall.SIGINT, "INT", 4},
		{"SIGHUP untrapped", syscall.SIGHUP, "", 128 + int(syscall.SIGHUP)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.trap == "" && signal.Ignored(tt.sig) {
				// Under nohup (or with SIGHUP otherwise ignored) dlock and
				// its command inherit the ignored signal, as documented:
				// an untrapped SIGHUP then kills nobody.
				t.Skipf("%s is ignored by this test process (nohup?); it stays ignored for dlock and its command", signalName(tt.sig))
			}
			t.Parallel()
			e := newEnv(t)
			ready, got := e.path("ready"), e.path("got")
			script := `echo up > "$0"; while :; do sleep 0.1; done`
			if tt.trap != "" {
				script = `trap 'echo ` + tt.trap + ` > "$1"; exit ` + strconv.Itoa(tt.want) + `' ` + tt.trap + `; ` + script
			}
			holder, wait := e.start(30*time.Second, "run", "job", "--", "sh", "-c", script, ready, got)
			e.waitForFile(ready, 10*time.Second)
			if err := holder.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			r := wait()
			if r.code != tt.want {
				t.Fatalf("got exit %d, want %d (stderr %q)", r.code, tt.want, r.stderr)
			}
			if tt.trap != "" {
				if b, _ := os.ReadFile(got); strings.TrimSpace(string(b)) != tt.trap {
					t.Errorf("command saw %q, want %q once", b, tt.trap)
				}
			}
			// Released: the next --try gets it at once.
			if r := e.run(20*time.Second, "run", "--try", "job", "--", "true"); r.code != 0 {
				t.Errorf("--try after the signal: got exit %d, want 0 (stderr %q)", r.code, r.stderr)
			}
		})
	}
}

func TestRunInterruptedWhileWaiting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ready := e.path("ready")
	_, _ = e.start(30*time.Second, "run", "job", "--", "sh", "-c", `echo up > "$0"; sleep 10`, ready)
	e.waitForFile(ready, 10*time.Second)
	waiter, wait := e.start(30*time.Second, "run", "job", "--", "true")
	time.Sleep(300 * time.Millisecond) // let it start waiting
	if err := waiter.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := wait()
	if r.code != 128+int(syscall.SIGTERM) || !strings.Contains(r.stderr, "interrupted") {
		t.Fatalf("got exit %d, stderr %q; want %d and a message saying interrupted", r.code, r.stderr, 128+int(syscall.SIGTERM))
	}
}

func TestRunWaitRunsOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ready := e.path("ready")
	_, _ = e.start(30*time.Second, "run", "job", "--", "sh", "-c", `echo up > "$0"; sleep 10`, ready)
	e.waitForFile(ready, 10*time.Second)
	r := e.run(20*time.Second, "run", "--wait", "300ms", "job", "--", "true")
	if r.code != ExitNotAcquired {
		t.Fatalf("got exit %d, want %d (stderr %q)", r.code, ExitNotAcquired, r.stderr)
	}
	if got := lines(r.stderr); len(got) != 1 || !strings.Contains(got[0], `"job"`) {
		t.Errorf("stderr: got %q, want one line naming the key", r.stderr)
	}
}

func TestRunCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t).with("DLOCK_KEY=stale", "DLOCK_FENCE=0")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
	}{
		{"exit code passes through", []string{"run", "k", "--", "sh", "-c", "exit 7"}, 7, "", ""},
		{"signal death is 128+N", []string{"run", "k", "--", "sh", "-c", "kill -TERM $$"}, 128 + int(syscall.SIGTERM), "", ""},
		{"env", []string{"run", "my key/1", "--", "sh", "-c", `echo "key=$DLOCK_KEY fence=$DLOCK_FENCE token=${#DLOCK_TOKEN}"`}, 0, "key=my key/1 fence=1 token=22", ""},
		{"not found", []string{"run", "k", "--", "./no-such-command"}, ExitNotFound, "", "cannot run"},
		{"missing --", []string{"run", "k", "true"}, ExitUsage, "", "expected --"},
		{"flag after key", []string{"run", "k", "--try", "--", "true"}, ExitUsage, "", "flags go before KEY"},
		{"try and wait", []string{"run", "--try", "--wait", "1s", "k", "--", "true"}, ExitUsage, "", "exclude"},
		{"bad ttl", []string{"run", "--ttl", "1ms", "k", "--", "true"}, ExitUsage, "", "TTL"},
		{"bad duration", []string{"run", "--wait", "soon", "k", "--", "true"}, ExitUsage, "", "not a duration"},
		{"empty key", []string{"run", "", "--", "true"}, ExitUsage, "", "empty key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.run(20*time.Second, tt.args...)
			if r.code != tt.wantCode {
				t.Fatalf("got exit %d, want %d (stdout %q, stderr %q)", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, tt.wantStdout) {
				t.Errorf("stdout: got %q, want it to contain %q", r.stdout, tt.wantStdout)
			}
			if !strings.Contains(r.stderr, tt.wantStderr) {
				t.Errorf("stderr: got %q, want it to contain %q", r.stderr, tt.wantStderr)
			}
		})
	}
}

// By default CMD runs in its own process group, and a lost lock stops the
// whole group: a shell's background job does not go on working without
// the lock. With --no-pgroup only CMD itself is signalled.
func TestRunLostLockStopsGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		flags         []string
		grandchildDie bool
	}{
		{"default", nil, true},
		{"--pgroup", []string{"--pgroup"}, true},
		{"--no-pgroup", []string{"--no-pgroup"}, false},
		{"--pgroup=false", []string{"--pgroup=false"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			pidFile := e.path("grandchild.pid")
			args := append([]string{"run", "--ttl", "1s", "--grace", "500ms"}, tt.flags...)
			args = append(args, "job", "--", "sh", "-c", `sleep 1000 & echo $! > "$0"; wait`, pidFile)
			holder, wait := e.start(30*time.Second, args...)
			pid, err := strconv.Atoi(strings.TrimSpace(e.waitForFile(pidFile, 10*time.Second)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
			if err := holder.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			other := e.run(20*time.Second, "run", "--wait", "10s", "job", "--", "true")
			if err := holder.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			if other.code != 0 {
				t.Fatalf("second owner: got exit %d, want 0 (stderr %q)", other.code, other.stderr)
			}
			if r := wait(); r.code != ExitLost {
				t.Fatalf("stale holder: got exit %d, want %d (stderr %q)", r.code, ExitLost, r.stderr)
			}
			if tt.grandchildDie {
				if !processGone(pid, 5*time.Second) {
					t.Errorf("the background job of CMD (pid %d) still runs after the lock was lost", pid)
				}
			} else if processGone(pid, 200*time.Millisecond) {
				t.Errorf("with %v the background job of CMD (pid %d) was stopped, want only CMD signalled", tt.flags, pid)
			}
		})
	}
}
