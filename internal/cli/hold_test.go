//go:build unix

package cli

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitHeld waits until dlock status says key is held.
func (e *testEnv) waitHeld(key string, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := e.run(20*time.Second, "status", key)
		if r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%q not held within %v (last status: exit %d, %q)", key, timeout, r.code, r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dlock hold KEY holds the lock with no command until a signal, then
// releases it and exits 0; a lost lock exits 70.
func TestHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	holder, wait := e.start(30*time.Second, "hold", "job")
	e.waitHeld("job", 10*time.Second)
	if r := e.run(20*time.Second, "run", "--try", "job", "--", "true"); r.code != ExitNotAcquired || !strings.Contains(r.stderr, "cmd=dlock-hold") {
		t.Errorf("--try while held: got exit %d, stderr %q; want %d naming cmd=dlock-hold", r.code, r.stderr, ExitNotAcquired)
	}
	if err := holder.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := wait()
	if r.code != 0 || strings.TrimSpace(r.stdout) != "fence=1" {
		t.Fatalf("hold after SIGTERM: got exit %d, stdout %q, stderr %q; want 0 and fence=1", r.code, r.stdout, r.stderr)
	}
	if r := e.run(20*time.Second, "status", "job"); r.code != ExitFree {
		t.Errorf("status after hold ended: got exit %d, want %d (free)", r.code, ExitFree)
	}

	holder, wait = e.start(30*time.Second, "hold", "--ttl", "1s", "job")
	e.waitHeld("job", 10*time.Second)
	if err := holder.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	other := e.run(20*time.Second, "run", "--wait", "10s", "job", "--", "true")
	if err := holder.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if other.code != 0 {
		t.Fatalf("second owner: got exit %d (stderr %q)", other.code, other.stderr)
	}
	if r := wait(); r.code != ExitLost || !strings.Contains(r.stderr, "lost lock") {
		t.Errorf("stale hold: got exit %d, stderr %q; want %d and lost lock", r.code, r.stderr, ExitLost)
	}

	if r := e.run(20*time.Second, "hold", "k", "extra"); r.code != ExitUsage {
		t.Errorf("hold with two arguments: got exit %d, want %d", r.code, ExitUsage)
	}
}
