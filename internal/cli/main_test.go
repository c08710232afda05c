//go:build unix

package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/build"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dlockBin is the dlock binary the tests run as real processes, built once
// by TestMain.
var dlockBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "dlock-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Other users run it too (TestDefaultBackendTwoUsers).
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dlockBin = filepath.Join(dir, "dlock")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", dlockBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, goTool, append(args, "github.com/dlock-go/dlock/cmd/dlock")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building dlock: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// testEnv is an environment whose default backend is an SQLite file in a
// temporary directory, and whose state directory is temporary too, so tests
// never touch the user's.
type testEnv struct {
	t   *testing.T
	dir string
	env []string
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	dir := t.TempDir()
	backend := (&url.URL{Scheme: "sqlite", Path: filepath.ToSlash(filepath.Join(dir, "locks.db"))}).String()
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case EnvBackend, EnvLockDir, "XDG_STATE_HOME", "HOME", EnvKey, EnvFence, EnvToken:
			continue
		}
		env = append(env, kv)
	}
	env = append(env, EnvBackend+"="+backend, "XDG_STATE_HOME="+filepath.Join(dir, "state"), "HOME="+filepath.Join(dir, "home"))
	return &testEnv{t: t, dir: dir, env: env}
}

// with returns a copy of e with extra environment entries.
func (e *testEnv) with(kv ...string) *testEnv {
	c := *e
	c.env = append(append([]string(nil), e.env...), kv...)
	return &c
}

// without returns a copy of e without the environment variable name.
func (e *testEnv) without(name string) *testEnv {
	c := *e
	c.env = nil
	for _, kv := range e.env {
		if !strings.HasPrefix(kv, name+"=") {
			c.env = append(c.env, kv)
		}
	}
	return &c
}

// path returns a file name in the test's directory.
func (e *testEnv) path(name string) string { return filepath.Join(e.dir, name) }

// command returns an unstarted dlock process with args, killed when the
// test's deadline passes.
func (e *testEnv) command(ctx context.Context, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.CommandContext(ctx, dlockBin, args...)
	cmd.Env = e.env
	cmd.Dir = e.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	return cmd, &stdout, &stderr
}

type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// run runs dlock with args to completion, within timeout.
func (e *testEnv) run(timeout time.Duration, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), timeout)
	defer cancel()
	cmd, stdout, stderr := e.command(ctx, args...)
	start := time.Now()
	err := cmd.Run()
	return e.result(cmd, err, stdout, stderr, time.Since(start))
}

func (e *testEnv) result(cmd *exec.Cmd, err error, stdout, stderr *bytes.Buffer, took time.Duration) result {
	e.t.Helper()
	var xe *exec.ExitError
	if err != nil && !errors.As(err, &xe) {
		e.t.Fatalf("dlock %q: %v", cmd.Args[1:], err)
	}
	return result{code: exitCode(cmd.ProcessState), stdout: stdout.String(), stderr: stderr.String(), took: took}
}

// start starts dlock with args in the background. wait returns its result.
func (e *testEnv) start(timeout time.Duration, args ...string) (cmd *exec.Cmd, wait func() result) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), timeout)
	cmd, stdout, stderr := e.command(ctx, args...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		e.t.Fatalf("starting dlock %q: %v", args, err)
	}
	e.t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	return cmd, func() result {
		e.t.Helper()
		err := cmd.Wait()
		return e.result(cmd, err, stdout, stderr, time.Since(start))
	}
}

// waitForFile waits until name exists and is not empty, and returns its
// content.
func (e *testEnv) waitForFile(name string, timeout time.Duration) string {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(name)
		if err == nil && len(b) > 0 {
			return string(b)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s did not appear within %v", filepath.Base(name), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lines splits s into its non-empty lines.
func lines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
