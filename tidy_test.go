package dlock_test

import (
	"os/exec"
	"testing"
)

// TestModTidy fails when go.mod or go.sum of the module, of the benchmark
// module, of the gocron adapters' module (dlockgocron) or of the
// OpenTelemetry module (dlockotel) differ from what `go mod tidy` writes (a
// direct dependency marked indirect, a missing or stale checksum).
func TestModTidy(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping go mod tidy -diff")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	for _, dir := range []string{".", "bench", "dlockgocron", "dlockotel"} {
		cmd := exec.CommandContext(t.Context(), goBin, "mod", "tidy", "-diff")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("go mod tidy -diff in %s: %v\n%s", dir, err, out)
		}
	}
}
