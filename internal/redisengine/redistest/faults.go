package redistest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/drivertest"
	"github.com/dlock-go/dlock/internal/testserver"
)

// FaultHarness is a harness for drivertest.RunFaultTests over Redis
// servers: one server, or every node of a Redlock deployment, broken all
// at once. It implements drivertest.RestartHarness (Kill and Restart act on
// every server), drivertest.ConnKillHarness (CLIENT KILL on every server),
// drivertest.BlackholeHarness and drivertest.LatencyHarness (every proxy
// at once) and drivertest.PauseHarness (every server at once).
type FaultHarness struct {
	// Servers keep their writes across a crash; see StartFaultServers.
	Servers []*testserver.Redis
	// ProxyFaults' Proxies are a proxy in front of each of Servers, in
	// the same order; they break (drivertest.BlackholeHarness,
	// drivertest.LatencyHarness) all at once.
	testserver.ProxyFaults
	// Open makes a driver of the servers at addrs ("host:port", one per
	// server, in the order of Servers): the servers' own addresses, or
	// those of their proxies.
	Open func(ctx context.Context, addrs []string) (driver.Locker, error)
	// URLForChild, when not empty, is a dlock.Open URL of the servers
	// for drivertest's HolderKilled child process.
	URLForChild string
}

// StartFaultServers starts n redis-servers for a FaultHarness, with a
// proxy in front of each. Unlike testserver.StartRedis's default, they
// write every command to an append-only file, synced before it is
// answered (appendonly yes, appendfsync always), so that a lease and the
// fence counters survive a crash and a restart, as RunFaultTests's
// RestartLeaseSurvives expects.
func StartFaultServers(t testing.TB, n int) ([]*testserver.Redis, []*testserver.Proxy) {
	t.Helper()
	servers := make([]*testserver.Redis, n)
	proxies := make([]*testserver.Proxy, n)
	for i := range servers {
		servers[i] = testserver.StartRedis(t,
			testserver.RedisArg("--appendonly"), testserver.RedisArg("yes"),
			testserver.RedisArg("--appendfsync"), testserver.RedisArg("always"))
		proxies[i] = testserver.StartProxy(t, servers[i].Addr())
	}
	return servers, proxies
}

// MakeDriver implements drivertest.Harness: a driver of the servers.
func (h *FaultHarness) MakeDriver(ctx context.Context) (driver.Locker, error) {
	addrs := make([]string, len(h.Servers))
	for i, s := range h.Servers {
		addrs[i] = s.Addr()
	}
	return h.Open(ctx, addrs)
}

// MakeProxiedDriver implements drivertest.BlackholeHarness: a driver of
// the servers through their proxies.
func (h *FaultHarness) MakeProxiedDriver(ctx context.Context) (driver.Locker, error) {
	addrs := make([]string, len(h.Proxies))
	for i, p := range h.Proxies {
		addrs[i] = p.Addr()
	}
	return h.Open(ctx, addrs)
}

// URL implements drivertest.ProcessHarness: URLForChild.
func (h *FaultHarness) URL() string { return h.URLForChild }

// Close implements drivertest.Harness; the servers and proxies end with
// the test that started them.
func (*FaultHarness) Close() {}

// Addr implements drivertest.RestartHarness: the servers' addresses.
func (h *FaultHarness) Addr() string {
	addrs := make([]string, len(h.Servers))
	for i, s := range h.Servers {
		addrs[i] = s.Addr()
	}
	return strings.Join(addrs, ",")
}

// Kill implements drivertest.RestartHarness: it kills every server. A
// server still down when t ends is started again then, for the next
// scenario.
func (h *FaultHarness) Kill(t testing.TB) {
	for _, s := range h.Servers {
		s.Kill()
	}
	t.Cleanup(func() {
		for _, s := range h.Servers {
			if s.Exited() {
				s.Restart()
			}
		}
	})
}

// Restart implements drivertest.RestartHarness: it kills every server,
// then starts each again with its data.
func (h *FaultHarness) Restart(t testing.TB) {
	for _, s := range h.Servers {
		s.Kill()
	}
	for _, s := range h.Servers {
		s.Restart()
	}
}

// KillConnections implements drivertest.ConnKillHarness: CLIENT KILL of
// every normal and pub/sub connection on every server.
func (h *FaultHarness) KillConnections(t testing.TB) int {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	killed := 0
	for _, s := range h.Servers {
		for _, typ := range []string{"normal", "pubsub"} {
			out, err := s.Do(ctx, "CLIENT", "KILL", "TYPE", typ)
			n, cerr := strconv.Atoi(out)
			if err != nil || cerr != nil {
				t.Fatalf("CLIENT KILL TYPE %s on %s = %q, %v", typ, s.Addr(), out, err)
			}
			killed += n
		}
	}
	return killed
}

// Pause implements drivertest.PauseHarness: every server is stopped with
// SIGSTOP until resume.
func (h *FaultHarness) Pause(t testing.TB) (resume func()) {
	return drivertest.Break(t, func() {
		for _, s := range h.Servers {
			s.Pause()
		}
	}, func() {
		for _, s := range h.Servers {
			s.Resume()
		}
	})
}
