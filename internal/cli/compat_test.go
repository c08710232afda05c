//go:build unix

package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// What users of flock(1), etcdctl lock and consul lock expect.
func TestRunFlockCompat(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ready := e.path("ready")
	_, _ = e.start(60*time.Second, "run", "held", "--", "sh", "-c", `echo up > "$0"; sleep 30`, ready)
	e.waitForFile(ready, 10*time.Second)

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
	}{
		{"conflict exit code with --try", []string{"run", "--try", "--conflict-exit-code", "3", "held", "--", "true"}, 3, "", "not acquired"},
		{"conflict exit code with --wait", []string{"run", "--wait", "200ms", "--conflict-exit-code", "0", "held", "--", "true"}, 0, "", "not acquired"},
		{"conflict exit code out of range", []string{"run", "--conflict-exit-code", "256", "k", "--", "true"}, ExitUsage, "", "between 0 and 255"},
		{"-c before KEY", []string{"run", "-c", `echo "fence=$DLOCK_FENCE"; exit 5`, "c1"}, 5, "fence=1", ""},
		{"-c after KEY, as flock", []string{"run", "c2", "-c", `echo "key=$DLOCK_KEY"`}, 0, "key=c2", ""},
		{"-c and CMD", []string{"run", "-c", "true", "k", "--", "true"}, ExitUsage, "", "instead of -- CMD"},
		{"-c empty", []string{"run", "-c", "", "k"}, ExitUsage, "", "needs a shell command"},
		{"--ttl 0", []string{"run", "--ttl", "0", "k", "--", "true"}, ExitUsage, "", "--ttl must be positive"},
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

// A bad flag value is one short line, not the whole usage.
func TestBadFlagOneLine(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, args := range [][]string{
		{"run", "--wait", "soon", "k", "--", "true"},
		{"run", "--nosuch", "k", "--", "true"},
		{"status", "--connect-timeout", "x", "k"},
		{"demo", "coupons", "--workers", "many"},
	} {
		r := e.run(20*time.Second, args...)
		if got := lines(r.stderr); r.code != ExitUsage || len(got) != 1 || !strings.Contains(got[0], "-h") {
			t.Errorf("dlock %q: got exit %d, stderr %q; want %d and one line pointing to -h", args, r.code, r.stderr, ExitUsage)
		}
	}
}

// The holder's user is in the metadata even when $USER is not set.
func TestMetadataUserWithoutEnv(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var env []string
	for _, kv := range e.env {
		if !strings.HasPrefix(kv, "USER=") {
			env = append(env, kv)
		}
	}
	e.env = env
	r := e.run(20*time.Second, "run", "k", "--", dlockBin, "status", "k")
	if r.code != 0 {
		t.Fatalf("got exit %d, stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, " user=") && !strings.Contains(r.stdout, " uid=") {
		t.Errorf("status: got %q, want the holder's user (user=NAME or uid=N)", r.stdout)
	}
}

func TestStatusJSONAndExitCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.run(20*time.Second, "status", "--json", "job")
	if r.code != ExitFree {
		t.Fatalf("status of a free key: got exit %d, want %d (stderr %q)", r.code, ExitFree, r.stderr)
	}
	var free map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &free); err != nil || free["held"] != false || free["key"] != "job" {
		t.Errorf("status --json of a free key: got %q (%v), want key job, held false", r.stdout, err)
	}

	r = e.run(20*time.Second, "run", "job", "--", dlockBin, "status", "--json", "job")
	if r.code != 0 {
		t.Fatalf("status --json under the lock: got exit %d, want 0 (stderr %q)", r.code, r.stderr)
	}
	var held jsonStatus
	if err := json.Unmarshal([]byte(r.stdout), &held); err != nil {
		t.Fatalf("status --json: %v in %q", err, r.stdout)
	}
	if !held.Held || held.Fence != 1 || !strings.Contains(held.Holder, "cmd=dlock") || held.ExpiresInMS == nil || *held.ExpiresInMS <= 0 {
		t.Errorf("status --json while held: got %q, want held, fence 1, holder cmd=dlock, expires_in_ms > 0", r.stdout)
	}
	if n := strings.Count(r.stdout, "\n"); n != 1 {
		t.Errorf("status --json: got %d lines, want 1", n)
	}
}
