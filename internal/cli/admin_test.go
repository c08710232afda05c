//go:build unix

package cli

import (
	"strings"
	"testing"
	"time"
)

// dlock unlock --force --token releases the lock only for its own token,
// and logs what it removed; the holder then loses the lock (exit 70).
// --any-owner and list say plainly what the library cannot do yet.
func TestUnlockForceAndList(t *testing.T) {
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
		{"any owner", []string{"unlock", "--force", "--any-owner", "job"}, ExitUnavailable, "--any-owner"},
		{"list", []string{"list"}, ExitUnavailable, "cannot list locks"},
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
