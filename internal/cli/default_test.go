//go:build unix

package cli

import (
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sharedTempDir returns a new directory every user can enter, removed when
// the test ends, standing in for /run/lock.
func sharedTempDir(t *testing.T, mode fs.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dlock-lockdir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Without --backend and $DLOCK_BACKEND the default is one SQLite file for
// the whole host, in a sticky world-writable directory, writable by every
// user whatever dlock's umask; $HOME is not touched.
func TestDefaultBackend(t *testing.T) {
	t.Parallel()
	lockDir := sharedTempDir(t, 0o755)
	e := newEnv(t).without(EnvBackend).with(EnvLockDir + "=" + lockDir)
	r := e.run(20*time.Second, "run", "job", "--", "sh", "-c", "umask 077; "+dlockBin+` run --try job2 -- true && echo ok`)
	if r.code != 0 || !strings.Contains(r.stdout, "ok") {
		t.Fatalf("got exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.run(20*time.Second, "run", "job", "--", "sh", "-c", "umask 077; exec "+dlockBin+` status job`)
	if r.code != 0 || !strings.Contains(r.stdout, "state:   held") {
		t.Fatalf("status under the lock: got exit %d, stdout %q, stderr %q; want 0 and held", r.code, r.stdout, r.stderr)
	}
	dir := filepath.Join(lockDir, "dlock")
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode()&(fs.ModeDir|fs.ModeSticky|fs.ModePerm), fs.ModeDir|fs.ModeSticky|0o777; got != want {
		t.Errorf("lock directory mode: got %v, want %v", got, want)
	}
	fi, err = os.Lstat(filepath.Join(dir, "dlock.db"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode(); got != 0o666 {
		t.Errorf("database file mode: got %v, want -rw-rw-rw-", got)
	}
	if _, err := os.Stat(e.path("home")); err == nil {
		t.Errorf("dlock created the missing $HOME")
	}
	entries, _ := os.ReadDir(lockDir)
	if len(entries) != 1 {
		t.Errorf("lock directory's parent holds %d entries, want only dlock (no temporary leftovers)", len(entries))
	}
}

// The default backend refuses places where users would not exclude each
// other or could delete each other's locks, naming the path.
func TestDefaultBackendUnsafe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		mention string
	}{
		{"directory not sticky", func(t *testing.T, dir string) {
			mkdirMode(t, dir, 0o777)
		}, "want 1777"},
		{"directory not world-writable", func(t *testing.T, dir string) {
			mkdirMode(t, dir, 0o755|fs.ModeSticky)
		}, "want 1777"},
		{"directory is a symlink", func(t *testing.T, dir string) {
			other := sharedTempDir(t, 0o777|fs.ModeSticky)
			if err := os.Symlink(other, dir); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"directory owned by another user", func(t *testing.T, dir string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give the directory to another user")
			}
			mkdirMode(t, dir, 0o777|fs.ModeSticky)
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "owned by uid 65534"},
		{"file private", func(t *testing.T, dir string) {
			mkdirMode(t, dir, 0o777|fs.ModeSticky)
			if err := os.WriteFile(filepath.Join(dir, "dlock.db"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(dir, "dlock.db"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "want 0666"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lockDir := sharedTempDir(t, 0o755)
			tt.prepare(t, filepath.Join(lockDir, "dlock"))
			e := newEnv(t).without(EnvBackend).with(EnvLockDir + "=" + lockDir)
			for _, args := range [][]string{{"run", "job", "--", "true"}, {"status", "job"}} {
				r := e.run(20*time.Second, args...)
				got := lines(r.stderr)
				if r.code != ExitUnavailable || len(got) != 1 || !strings.Contains(got[0], filepath.Join(lockDir, "dlock")) || !strings.Contains(got[0], tt.mention) {
					t.Errorf("dlock %s: got exit %d, stderr %q; want %d and one line naming the path and %q", args[0], r.code, r.stderr, ExitUnavailable, tt.mention)
				}
			}
		})
	}
}

func mkdirMode(t *testing.T, dir string, mode fs.FileMode) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
}

// An empty --backend or $DLOCK_BACKEND is an error, not the default; mem://
// would exclude nobody across processes.
func TestBackendEmptyOrInProcess(t *testing.T) {
	t.Parallel()
	e := newEnv(t).with(EnvLockDir + "=" + sharedTempDir(t, 0o755))
	tests := []struct {
		name    string
		env     *testEnv
		args    []string
		mention string
	}{
		{"empty --backend", e, []string{"--backend", ""}, "--backend is empty"},
		{"empty --backend=", e, []string{"--backend="}, "--backend is empty"},
		{"empty DLOCK_BACKEND", e.with(EnvBackend + "="), nil, "DLOCK_BACKEND is set but empty"},
		{"mem", e, []string{"--backend", "mem://"}, "one process only"},
		{"named in-memory SQLite", e, []string{"--backend", "sqlite::memory:x"}, "one process only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cmd := range [][]string{{"run", "job", "--", "true"}, {"status", "job"}} {
				args := append(append([]string{cmd[0]}, tt.args...), cmd[1:]...)
				r := tt.env.run(20*time.Second, args...)
				if got := lines(r.stderr); r.code != ExitUsage || len(got) != 1 || !strings.Contains(got[0], tt.mention) {
					t.Errorf("dlock %q: got exit %d, stderr %q; want %d and one line saying %q", args, r.code, r.stderr, ExitUsage, tt.mention)
				}
			}
		})
	}
}

// Two users on one host exclude each other with the default backend: the
// second gets 75 while the first holds the lock.
func TestDefaultBackendTwoUsers(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run dlock as two other users (uids 65534 and 65533)")
	}
	// As /run/lock on Debian: root's, sticky, world-writable; the first
	// user makes the dlock directory in it.
	lockDir := sharedTempDir(t, 0o777|fs.ModeSticky)
	work := sharedTempDir(t, 0o777|fs.ModeSticky)
	e := newEnv(t).without(EnvBackend).with(EnvLockDir + "=" + lockDir)
	as := func(cmd *exec.Cmd, uid uint32) {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
		cmd.Dir = work
	}

	ready := filepath.Join(work, "ready")
	ctx := t.Context()
	holder, _, holderErr := e.command(ctx, "run", "job", "--", "sh", "-c", `echo up > "$0"; sleep 30`, ready)
	as(holder, 65534)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = holder.Process.Kill()
		_ = holder.Wait()
		if t.Failed() {
			t.Logf("holder's stderr: %q", holderErr.String())
		}
	})
	e.waitForFile(ready, 20*time.Second)

	first := "uid=65534"
	if u, err := user.LookupId("65534"); err == nil {
		first = "user=" + u.Username
	}
	for _, args := range [][]string{{"run", "--try", "job", "--", "true"}, {"run", "--wait", "300ms", "job", "--", "true"}} {
		other, stdout, stderr := e.command(ctx, args...)
		as(other, 65533)
		err := other.Run()
		r := e.result(other, err, stdout, stderr, 0)
		if r.code != ExitNotAcquired || !strings.Contains(r.stderr, first) {
			t.Errorf("second user, dlock %q: got exit %d, stderr %q; want %d naming the first user (%s)", args, r.code, r.stderr, ExitNotAcquired, first)
		}
	}
}
