package testserver

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ZooKeeper jars installed by the Debian package "zookeeper". The jar's
// manifest lists its dependencies in /usr/share/java, as the package's
// zkEnv.sh relies on; slf4j-simple (optional) sends the server's warnings to
// its log file.
const (
	zkJar        = "/usr/share/java/zookeeper.jar"
	zkLogJar     = "/usr/share/java/slf4j-simple.jar"
	zkMainClass  = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
	zkDebPackage = "zookeeper"
)

// ZooKeeperConfig tunes the servers StartZooKeeper and
// StartZooKeeperEnsemble run. Zero fields take the defaults noted.
type ZooKeeperConfig struct {
	// TickTime is ZooKeeper's basic time unit. Default 200 ms, so that
	// session expiry tests are fast.
	TickTime time.Duration
	// MinSessionTimeout and MaxSessionTimeout bound the session timeouts
	// the servers grant. Defaults 2 × TickTime and 60 s.
	MinSessionTimeout, MaxSessionTimeout time.Duration
}

func (c ZooKeeperConfig) withDefaults() ZooKeeperConfig {
	if c.TickTime <= 0 {
		c.TickTime = 200 * time.Millisecond
	}
	if c.MinSessionTimeout <= 0 {
		c.MinSessionTimeout = 2 * c.TickTime
	}
	if c.MaxSessionTimeout <= 0 {
		c.MaxSessionTimeout = 60 * time.Second
	}
	return c
}

// ZooKeeper is a running standalone server or ensemble.
type ZooKeeper struct {
	cfg   ZooKeeperConfig
	addrs []string
	procs []*Process
}

// Addrs returns the client addresses ("127.0.0.1:port"), one per server.
func (z *ZooKeeper) Addrs() []string { return append([]string(nil), z.addrs...) }

// Addr returns the client addresses joined by commas, as a zk:// URL's host
// part takes them.
func (z *ZooKeeper) Addr() string { return strings.Join(z.addrs, ",") }

// Server returns the process of server i (0-based), for fault injection:
// Kill is kill -9, Pause/Resume SIGSTOP/SIGCONT, Restart keeps its port and
// data directory.
func (z *ZooKeeper) Server(i int) *Process { return z.procs[i] }

// Servers returns the number of servers.
func (z *ZooKeeper) Servers() int { return len(z.procs) }

// Config returns the configuration the servers run with.
func (z *ZooKeeper) Config() ZooKeeperConfig { return z.cfg }

// StartZooKeeper runs a standalone ZooKeeper server from the Debian package
// on a free loopback port with a temporary data directory, and waits until it
// serves requests. JVM start-up takes seconds: start one per test binary and
// share it (tests use distinct paths).
func StartZooKeeper(t testing.TB, cfg ZooKeeperConfig) *ZooKeeper {
	t.Helper()
	return startZooKeeper(t, cfg, 1)
}

// StartZooKeeperEnsemble runs an ensemble of n servers (n ≥ 3, odd) on
// loopback, and waits until every server has joined the quorum.
func StartZooKeeperEnsemble(t testing.TB, cfg ZooKeeperConfig, n int) *ZooKeeper {
	t.Helper()
	if n < 3 || n%2 == 0 {
		t.Fatalf("StartZooKeeperEnsemble: n = %d, want an odd number ≥ 3", n)
	}
	return startZooKeeper(t, cfg, n)
}

func startZooKeeper(t testing.TB, cfg ZooKeeperConfig, n int) *ZooKeeper {
	t.Helper()
	java := LookPath(t, "java", "default-jre-headless")
	if _, err := os.Stat(zkJar); err != nil {
		msg := fmt.Sprintf("%s not found: install the Debian package %s (or run scripts/install-test-deps.sh)", zkJar, zkDebPackage)
		if Required() {
			t.Fatalf("%s; %s=1 requires every server", msg, RequireEnv)
		}
		t.Skip(msg)
	}
	classpath := zkJar
	if _, err := os.Stat(zkLogJar); err == nil {
		classpath += ":" + zkLogJar
	}
	cfg = cfg.withDefaults()
	z := &ZooKeeper{cfg: cfg}
	type ports struct{ client, peer, election int }
	ps := make([]ports, n)
	for i := range ps {
		ps[i] = ports{FreePort(t), FreePort(t), FreePort(t)}
		z.addrs = append(z.addrs, Addr(ps[i].client))
	}
	for i := range ps {
		dir := t.TempDir()
		data := filepath.Join(dir, "data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			t.Fatalf("zookeeper: %v", err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "tickTime=%d\n", cfg.TickTime.Milliseconds())
		fmt.Fprintf(&b, "initLimit=%d\nsyncLimit=%d\n", 50, 25)
		fmt.Fprintf(&b, "dataDir=%s\n", data)
		fmt.Fprintf(&b, "clientPort=%d\nclientPortAddress=127.0.0.1\n", ps[i].client)
		fmt.Fprintf(&b, "minSessionTimeout=%d\nmaxSessionTimeout=%d\n", cfg.MinSessionTimeout.Milliseconds(), cfg.MaxSessionTimeout.Milliseconds())
		b.WriteString("4lw.commands.whitelist=*\nadmin.enableServer=false\n")
		b.WriteString("maxClientCnxns=0\nforceSync=no\nautopurge.purgeInterval=0\n")
		if n > 1 {
			for j, p := range ps {
				fmt.Fprintf(&b, "server.%d=127.0.0.1:%d:%d\n", j+1, p.peer, p.election)
			}
			if err := os.WriteFile(filepath.Join(data, "myid"), []byte(strconv.Itoa(i+1)+"\n"), 0o644); err != nil {
				t.Fatalf("zookeeper: %v", err)
			}
		}
		conf := filepath.Join(dir, "zoo.cfg")
		if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
			t.Fatalf("zookeeper: %v", err)
		}
		name := fmt.Sprintf("zookeeper :%d", ps[i].client)
		if n > 1 {
			name = fmt.Sprintf("zookeeper %d/%d :%d", i+1, n, ps[i].client)
		}
		z.procs = append(z.procs, Start(t, Spec{
			Name: name,
			Path: java,
			Args: []string{
				"-Xms32m", "-Xmx192m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
				"-Djava.net.preferIPv4Stack=true",
				"-Dzookeeper.log.dir=" + dir,
				"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
				"-cp", classpath, zkMainClass, conf,
			},
			Dir: dir,
			// Ready is left out: a member of an ensemble cannot serve until
			// a quorum runs, so all start first and are waited for below.
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), zkStartTimeout)
	defer cancel()
	for i := range z.procs {
		if err := z.WaitReady(ctx, i); err != nil {
			t.Fatalf("%v", err)
		}
	}
	return z
}

// zkStartTimeout bounds the wait for a server (or a whole ensemble) to
// serve; a JVM on a busy machine takes a while.
const zkStartTimeout = 90 * time.Second

// WaitReady waits until server i serves client requests (after a start or
// a Restart), or ctx ends; the error then includes the tail of its log.
func (z *ZooKeeper) WaitReady(ctx context.Context, i int) error {
	p := z.procs[i]
	ready := zkReady(z.addrs[i])
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = ready(attempt)
		cancel()
		if last == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited during start-up (%v); log tail:\n%s", p.Name(), last, p.tail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v; log tail:\n%s", p.Name(), last, p.tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// zkReady succeeds once the server answers the srvr four-letter word with a
// mode (standalone, leader or follower): it serves client requests.
func zkReady(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		out, err := FourLetterWord(ctx, addr, "srvr")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Mode: ") {
			return fmt.Errorf("%w: %s", ErrNotReady, strings.TrimSpace(out))
		}
		return nil
	}
}

// FourLetterWord sends a ZooKeeper four-letter command ("ruok", "srvr",
// "cons", …) to addr and returns the reply.
func FourLetterWord(ctx context.Context, addr, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	var b strings.Builder
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			break
		}
	}
	return b.String(), nil
}

// Mode returns server i's role as srvr reports it: "standalone", "leader"
// or "follower"; empty when it does not answer.
func (z *ZooKeeper) Mode(ctx context.Context, i int) string {
	out, err := FourLetterWord(ctx, z.addrs[i], "srvr")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(out, "\n") {
		if m, ok := strings.CutPrefix(line, "Mode: "); ok {
			return strings.TrimSpace(m)
		}
	}
	return ""
}
