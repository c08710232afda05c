//go:build unix

package cli

import (
	"os"
	"strings"
	"testing"
	"time"
)

// dlock unlock --force --token releases the lock only for its own token,
// and logs what it removed; the holder then loses the lock (exit 70).
func TestUnlockForceToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tokenFile := e.path("token")
	holder, wait := e.start(60*time.Second, "run", "--ttl", "3s", "job", "--", "sh", "-c", `printf %s "$DLOCK_TOKEN" > "$0"; sleep 30`, tokenFile)
	_ = holder
	token := e.waitForFile(tokenFile, 10*time.Second)

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"no --force", []string{"unlock", "--token", token, "job"}, ExitUsage, "--force is required"},
		{"neither token nor any-owner", []string{"unlock", "--force", "job"}, ExitUsage, "exactly one"},
		{"free key", []string{"unlock", "--force", "--token", token, "other"}, ExitFree, "not held"},
		{"wrong token", []string{"unlock", "--force", "--token", "not-the-token", "job"}, ExitNotAcquired, "held by another token"},
		{"right token", []string{"unlock", "--force", "--token", token, "job"}, 0, "forced unlock of \"job\""},
	}
	for _, tt := range tests {
		r := e.run(20*time.Second, tt.args...)
		if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantStderr) {
			t.Errorf("%s: got exit %d, stderr %q; want %d and %q", tt.name, r.code, r.stderr, tt.wantCode, tt.wantStderr)
		}
		if strings.Contains(r.stderr, token) {
			t.Errorf("%s: stderr shows the token: %q", tt.name, r.stderr)
		}
	}
	if r := e.run(20*time.Second, "run", "--try", "job", "--", "true"); r.code != 0 {
		t.Errorf("--try after the forced unlock: got exit %d, want 0 (stderr %q)", r.code, r.stderr)
	}
	if r := wait(); r.code != ExitLost {
		t.Errorf("holder after the forced unlock: got exit %d, want %d (stderr %q)", r.code, ExitLost, r.stderr)
	}
}

// dlock list shows the held locks under a prefix, and dlock unlock --force
// --any-owner frees a lock whoever holds it, logging what it removed; the
// holder then loses the lock (exit 70).
func TestListAndUnlockAnyOwner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	started := e.path("started")
	holder, wait := e.start(60*time.Second, "run", "--ttl", "3s", "jobs/nightly", "--", "sh", "-c", `echo up > "$0"; sleep 30`, started)
	_ = holder
	e.waitForFile(started, 10*time.Second)
	if r := e.run(20*time.Second, "run", "--try", "other", "--", "true"); r.code != 0 {
		t.Fatalf("run other: exit %d, stderr %q", r.code, r.stderr)
	}

	r := e.run(20*time.Second, "list")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "jobs/nightly\t") || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("list: got exit %d, stdout %q; want 0 and one line for jobs/nightly (other was released)", r.code, r.stdout)
	}
	r = e.run(20*time.Second, "list", "--json", "jobs/")
	if r.code != 0 || !strings.Contains(r.stdout, `"key":"jobs/nightly"`) || !strings.Contains(r.stdout, `"held":true`) {
		t.Errorf("list --json jobs/: got exit %d, stdout %q", r.code, r.stdout)
	}
	if r := e.run(20*time.Second, "list", "none/"); r.code != 0 || r.stdout != "" {
		t.Errorf("list none/: got exit %d, stdout %q; want 0 and nothing", r.code, r.stdout)
	}
	if r := e.run(20*time.Second, "list", "a", "b"); r.code != ExitUsage {
		t.Errorf("list a b: got exit %d, want %d", r.code, ExitUsage)
	}

	r = e.run(20*time.Second, "unlock", "--force", "--any-owner", "jobs/nightly")
	if r.code != 0 || !strings.Contains(r.stderr, `forced unlock of "jobs/nightly"`) || !strings.Contains(r.stderr, "fence") {
		t.Errorf("unlock --any-owner: got exit %d, stderr %q; want 0 and a log line with what it removed", r.code, r.stderr)
	}
	if r := e.run(20*time.Second, "unlock", "--force", "--any-owner", "jobs/nightly"); r.code != ExitFree {
		t.Errorf("unlock --any-owner of a free key: got exit %d, want %d (stderr %q)", r.code, ExitFree, r.stderr)
	}
	if r := e.run(20*time.Second, "run", "--try", "jobs/nightly", "--", "true"); r.code != 0 {
		t.Errorf("--try after the forced unlock: got exit %d, want 0 (stderr %q)", r.code, r.stderr)
	}
	if r := wait(); r.code != ExitLost {
		t.Errorf("holder after the forced unlock: got exit %d, want %d (stderr %q)", r.code, ExitLost, r.stderr)
	}
}

// A command that ends before its next refresh, after its lock was freed by
// unlock --force --any-owner, still ends dlock run with ExitLost: it ran
// part of its time unprotected.
func TestRunFreedBeforeRefresh(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	started, proceed := e.path("started"), e.path("proceed")
	_, wait := e.start(60*time.Second, "run", "--ttl", "60s", "job", "--", "sh", "-c",
		`echo up > "$0"; while [ ! -e "$1" ]; do sleep 0.05; done`, started, proceed)
	e.waitForFile(started, 10*time.Second)
	if r := e.run(20*time.Second, "unlock", "--force", "--any-owner", "job"); r.code != 0 {
		t.Fatalf("unlock --any-owner: exit %d, stderr %q", r.code, r.stderr)
	}
	if err := os.WriteFile(proceed, []byte("go"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := wait()
	if r.code != ExitLost || !strings.Contains(r.stderr, "no longer held") {
		t.Errorf("holder whose lock was freed: got exit %d, stderr %q; want %d and \"no longer held\"", r.code, r.stderr, ExitLost)
	}
}
