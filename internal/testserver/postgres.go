package testserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgBinDirs are where Debian installs PostgreSQL's server binaries.
var pgBinDirs = []string{"/usr/lib/postgresql/*/bin"}

// Postgres is a PostgreSQL server started by StartPostgres. It listens on
// 127.0.0.1 only and accepts the user User with password Password over TCP
// (scram-sha-256). User is the cluster's superuser.
type Postgres struct {
	*Process
	// Port is the TCP port on 127.0.0.1.
	Port int
	// User, Password and Database name the superuser and the database that
	// URL connects to.
	User, Password, Database string
	// DataDir is the cluster's data directory; it survives Restart.
	DataDir string
	// SocketDir is the directory of the server's Unix socket
	// (.s.PGSQL.<Port>), where local connections are trusted: any user name
	// of the cluster connects without a password.
	SocketDir string
}

// PostgresOption configures StartPostgres.
type PostgresOption func(*pgOptions)

type pgOptions struct {
	password string
	settings []string
}

// PostgresPassword sets the superuser's password (default: random).
func PostgresPassword(pw string) PostgresOption {
	return func(o *pgOptions) { o.password = pw }
}

// PostgresSetting adds a server setting, e.g. "TimeZone=Pacific/Kiritimati",
// passed to postgres as -c name=value.
func PostgresSetting(nameValue string) PostgresOption {
	return func(o *pgOptions) { o.settings = append(o.settings, nameValue) }
}

// StartPostgres initialises a fresh cluster in a temporary directory and
// runs postgres on a free loopback port until the test ends. PostgreSQL
// refuses to run as root, so when the test runs as root, initdb and postgres
// run as the "postgres" system user (or "nobody") in a directory that user
// owns. The binaries come from PATH or /usr/lib/postgresql/*/bin (Debian
// package postgresql); when missing the test is skipped (or fails when
// Required).
func StartPostgres(t testing.TB, opts ...PostgresOption) *Postgres {
	t.Helper()
	initdb := LookPath(t, "initdb", "postgresql", pgBinDirs...)
	postgres := LookPath(t, "postgres", "postgresql", pgBinDirs...)
	o := pgOptions{password: randomSecret()}
	for _, opt := range opts {
		opt(&o)
	}

	base, cred := serverDir(t, "dlock-pg-", "postgres", "nobody")
	data := filepath.Join(base, "data")
	sock := filepath.Join(base, "sock")
	pwfile := filepath.Join(base, "pwfile")
	if err := os.Mkdir(sock, 0o755); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	if err := os.WriteFile(pwfile, []byte(o.password+"\n"), 0o600); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	chownAll(t, cred, sock, pwfile)

	const superuser = "dlock"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, initdb,
		"-D", data, "-U", superuser, "--pwfile="+pwfile,
		"--auth-host=scram-sha-256", "--auth-local=trust",
		"-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions")
	cmd.Dir = base
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	_ = os.Remove(pwfile)

	port := FreePort(t)
	pg := &Postgres{Port: port, User: superuser, Password: o.password, Database: "postgres", DataDir: data, SocketDir: sock}
	args := []string{
		"-D", data, "-p", strconv.Itoa(port), "-k", sock,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300",
		"-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning",
	}
	for _, s := range o.settings {
		args = append(args, "-c", s)
	}
	pg.Process = Start(t, Spec{
		Name:       fmt.Sprintf("postgres :%d", port),
		Path:       postgres,
		Args:       args,
		Dir:        base,
		Credential: cred,
		Ready: func(ctx context.Context) error {
			c, err := pgx.Connect(ctx, pg.URL())
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			return c.Ping(ctx)
		},
	})
	t.Cleanup(pg.Kill)
	return pg
}

// Kill stops the server at once: the postmaster and its backends, which
// run in sessions of their own (out of reach of a signal to the
// postmaster's process group), and waits until they are gone so that the
// data directory can be started again. Safe to call on a stopped server.
func (p *Postgres) Kill() {
	if p.Exited() {
		p.Process.Kill()
		return
	}
	p.Pause() // no new backends from here on
	kids := childPids(p.Pid())
	p.Process.Kill()
	for _, pid := range kids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range kids {
		for time.Now().Before(deadline) {
			if err := syscall.Kill(pid, 0); err != nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// Restart kills the server (see Kill) and starts it again on the same port
// and data directory, waiting until it accepts connections. PostgreSQL
// recovers from its write-ahead log as after a crash.
func (p *Postgres) Restart() {
	p.t.Helper()
	p.Kill()
	p.Process.Restart()
}

// childPids lists the processes whose parent is pid, from /proc.
func childPids(pid int) []int {
	if pid == 0 {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			kids = append(kids, n)
		}
	}
	return kids
}

// Addr returns "127.0.0.1:port".
func (p *Postgres) Addr() string { return Addr(p.Port) }

// URL returns a postgres:// URL for the superuser, without TLS.
func (p *Postgres) URL() string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(p.User, p.Password),
		Host:     p.Addr(),
		Path:     "/" + p.Database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// serverDir makes a temporary directory for a server's files, removed when
// the test ends. When the test runs as root it is owned by the first of
// users that exists and the returned credential runs processes as that
// user; otherwise the credential is nil. The directory lives under the
// system temp directory (not t.TempDir, whose parents may be private to
// root) and keeps paths short enough for Unix sockets.
func serverDir(t testing.TB, prefix string, users ...string) (string, *syscall.Credential) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	if os.Geteuid() != 0 {
		return dir, nil
	}
	for _, name := range users {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
		chownAll(t, cred, dir)
		return dir, cred
	}
	t.Fatalf("running as root and none of the users %v exists to run the server as", users)
	return "", nil
}

func chownAll(t testing.TB, cred *syscall.Credential, paths ...string) {
	t.Helper()
	if cred == nil {
		return
	}
	for _, p := range paths {
		if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("chown %s: %v", p, err)
		}
	}
}

func randomSecret() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "pw-" + hex.EncodeToString(b[:])
}
