// Package testserver starts real backend servers (redis-server, etcd,
// ZooKeeper, PostgreSQL, MariaDB) from binaries on the machine, on free
// loopback ports in temporary directories, and stops them when the test
// ends. Each backend adds a small file with its Spec; the process handling,
// readiness wait, fault controls (kill, restart, SIGSTOP) and the
// skip-or-fail policy live here once.
//
// A test whose server binary is missing is skipped with a message naming the
// Debian package, unless DLOCK_TEST_REQUIRE_SERVERS=1 (set by `make test`
// and CI), where it fails.
package testserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv is the environment variable that turns a missing server from a
// skip into a failure.
const RequireEnv = "DLOCK_TEST_REQUIRE_SERVERS"

// Required reports whether tests must have every server.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// LookPath finds a server binary on PATH or in the extra directories (for
// packages that install outside PATH, such as PostgreSQL's versioned bin
// directory). If it is missing the test is skipped, or fails when
// Required, with a message naming the Debian package to install.
func LookPath(t testing.TB, name, debPackage string, extraDirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, pattern := range extraDirs {
		matches, _ := filepath.Glob(filepath.Join(pattern, name))
		for i := len(matches) - 1; i >= 0; i-- { // newest version sorts last
			if st, err := os.Stat(matches[i]); err == nil && st.Mode()&0o111 != 0 {
				return matches[i]
			}
		}
	}
	msg := fmt.Sprintf("%s not found: install the Debian package %s (or run scripts/install-test-deps.sh)", name, debPackage)
	if Required() {
		t.Fatalf("%s; %s=1 requires every server", msg, RequireEnv)
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that no earlier call in this test process returned. The kernel may hand
// out a port again as soon as its probe listener closes, so without the
// bookkeeping two servers of one ensemble could be given the same port.
func FreePort(t testing.TB) int {
	t.Helper()
	givenMu.Lock()
	defer givenMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !given[port] {
			given[port] = true
			return port
		}
	}
	t.Fatalf("finding a free port: 100 probes returned ports already in use by this test process")
	return 0
}

var (
	givenMu sync.Mutex
	given   = map[int]bool{}
)

// Spec describes how to run one server process.
type Spec struct {
	// Name labels the process in messages, e.g. "redis-server :6390".
	Name string
	// Path is the binary; Args its arguments; Env extra environment
	// variables ("K=V"); Dir its working directory.
	Path string
	Args []string
	Env  []string
	Dir  string
	// Credential, when set, runs the process as another user (PostgreSQL
	// refuses to run as root).
	Credential *syscall.Credential
	// Ready is polled until it returns nil or StartTimeout passes.
	Ready func(ctx context.Context) error
	// StartTimeout bounds the wait for Ready; default 30 s.
	StartTimeout time.Duration
}

// Process is a running server started by Start.
type Process struct {
	t    testing.TB
	spec Spec
	log  string

	mu  sync.Mutex
	cmd *exec.Cmd
	ex  chan struct{}
}

// Start runs spec and waits until it is ready. The process is stopped when
// the test ends; its output is kept in a log file whose tail is shown if it
// fails to start.
func Start(t testing.TB, spec Spec) *Process {
	t.Helper()
	if spec.StartTimeout == 0 {
		spec.StartTimeout = 30 * time.Second
	}
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	p := &Process{t: t, spec: spec, log: filepath.Join(spec.Dir, "server.log")}
	t.Cleanup(p.Kill)
	if err := p.start(); err != nil {
		t.Fatalf("%v", err)
	}
	return p
}

// Name returns the spec's name.
func (p *Process) Name() string { return p.spec.Name }

// LogPath returns the file holding the process's output.
func (p *Process) LogPath() string { return p.log }

func (p *Process) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log file: %v", p.spec.Name, err)
	}
	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	cmd.Dir = p.spec.Dir
	cmd.Env = append(os.Environ(), p.spec.Env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: p.spec.Credential}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: start %s: %v", p.spec.Name, p.spec.Path, err)
	}
	ex := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(ex)
	}()
	p.mu.Lock()
	p.cmd, p.ex = cmd, ex
	p.mu.Unlock()
	if p.spec.Ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.spec.StartTimeout)
	defer cancel()
	var last error
	for {
		attemptCtx, ac := context.WithTimeout(ctx, 2*time.Second)
		last = p.spec.Ready(attemptCtx)
		ac()
		if last == nil {
			return nil
		}
		select {
		case <-ex:
			return fmt.Errorf("%s exited during start-up (%v); log tail:\n%s", p.spec.Name, cmd.ProcessState, p.tail())
		case <-ctx.Done():
			p.Kill()
			return fmt.Errorf("%s not ready after %v: %v; log tail:\n%s", p.spec.Name, p.spec.StartTimeout, last, p.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

func (p *Process) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, sig)
	}
}

// Kill stops the process at once (SIGKILL to its process group) and waits
// for it to exit. Safe to call on a stopped process.
func (p *Process) Kill() {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
}

// Stop asks the process to exit (SIGTERM), waits up to 10 s, then kills it.
func (p *Process) Stop() {
	p.signal(syscall.SIGTERM)
	if !p.wait(10 * time.Second) {
		p.Kill()
	}
}

func (p *Process) wait(d time.Duration) bool {
	p.mu.Lock()
	ex := p.ex
	p.mu.Unlock()
	if ex == nil {
		return true
	}
	select {
	case <-ex:
		return true
	case <-time.After(d):
		return false
	}
}

// Pause stops the process with SIGSTOP: it keeps its sockets but answers
// nothing until Resume.
func (p *Process) Pause() { p.signal(syscall.SIGSTOP) }

// Resume continues a paused process.
func (p *Process) Resume() { p.signal(syscall.SIGCONT) }

// Restart kills the process if it runs and starts it again with the same
// spec (same ports and data directory), waiting until it is ready.
func (p *Process) Restart() {
	p.t.Helper()
	p.Kill()
	if err := p.start(); err != nil {
		p.t.Fatalf("restart: %v", err)
	}
}

// Pid returns the process id, or 0.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	p.mu.Lock()
	ex := p.ex
	p.mu.Unlock()
	select {
	case <-ex:
		return true
	default:
		return false
	}
}

// DialReady returns a Ready function that succeeds once addr accepts TCP
// connections.
func DialReady(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// Addr returns "127.0.0.1:port".
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// ErrNotReady is a convenience error for Ready functions.
var ErrNotReady = errors.New("not ready")
