//go:build unix

package cli

import (
	"strings"
	"testing"
	"time"
)

// TestRunMinHold: `dlock run --min-hold 2s` of a command that exits at once
// keeps the key held until the hold is over (another --try run exits 75
// meanwhile), and dlock exits with the command's status once it released.
func TestRunMinHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	start := time.Now()
	_, wait := e.start(30*time.Second, "run", "--min-hold", "2s", "-c", "echo ran > "+e.path("ran")+"; exit 3", "job")
	e.waitForFile(e.path("ran"), 20*time.Second)
	r := e.run(20*time.Second, "run", "--try", "job", "--", "true")
	if r.code != ExitNotAcquired && time.Since(start) < 2*time.Second {
		t.Errorf("--try during the min hold: exit %d, stderr %q; want %d", r.code, r.stderr, ExitNotAcquired)
	}
	if res := wait(); res.code != 3 {
		t.Errorf("run --min-hold: exit %d, stderr %q; want the command's 3", res.code, res.stderr)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("run --min-hold 2s returned after %v, want no sooner than the hold", took)
	}
	if r := e.run(20*time.Second, "run", "--try", "job", "--", "true"); r.code != 0 {
		t.Errorf("--try after the min hold: exit %d, stderr %q; want 0", r.code, r.stderr)
	}
}

// TestRunMaxHold: `dlock run --max-hold` stops a command that runs longer,
// as on any loss (ExitLost), naming the hold limit.
func TestRunMaxHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.run(30*time.Second, "run", "--ttl", "500ms", "--max-hold", "1500ms", "--grace", "1s", "job", "--", "sleep", "20")
	if r.code != ExitLost || !strings.Contains(r.stderr, "WithMaxHold") {
		t.Errorf("run --max-hold of a hung command: exit %d, stderr %q; want %d naming the hold limit", r.code, r.stderr, ExitLost)
	}
	if r := e.run(20*time.Second, "run", "--try", "job", "--", "true"); r.code != 0 {
		t.Errorf("--try after the max hold: exit %d, stderr %q; want 0", r.code, r.stderr)
	}
	if r := e.run(20*time.Second, "run", "--min-hold", "2s", "--max-hold", "1s", "job", "--", "true"); r.code != ExitUsage {
		t.Errorf("--min-hold above --max-hold: exit %d, want %d", r.code, ExitUsage)
	}
}
