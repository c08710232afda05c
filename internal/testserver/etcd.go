package testserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Etcd is a running etcd cluster of one or more members on loopback, started
// by StartEtcd or StartEtcdCluster. Its members are stopped when the test
// ends.
type Etcd struct {
	// Members are the cluster's members, in start order.
	Members []*EtcdMember
	tls     *EtcdTLS
}

// EtcdMember is one etcd process. Its Process controls faults: Kill (kill -9),
// Restart (same ports and data directory), Pause and Resume.
type EtcdMember struct {
	*Process
	// MemberName is the member's --name.
	MemberName string
	// ClientAddr is the "127.0.0.1:port" clients connect to.
	ClientAddr string
	// PeerAddr is the "127.0.0.1:port" of the member's peer listener.
	PeerAddr string
}

// EtcdTLS makes the client listener serve TLS with the given files; with
// ClientCertAuth it also requires client certificates signed by CAFile.
// Peers still talk plain HTTP on loopback.
type EtcdTLS struct {
	CertFile, KeyFile, CAFile string
	ClientCertAuth            bool
	// ClientCertFile and ClientKeyFile are used by the readiness check when
	// ClientCertAuth is set.
	ClientCertFile, ClientKeyFile string
}

// EtcdOption configures StartEtcd and StartEtcdCluster.
type EtcdOption func(*etcdConfig)

type etcdConfig struct {
	tls *EtcdTLS
}

// WithEtcdTLS serves the client port over TLS.
func WithEtcdTLS(cfg EtcdTLS) EtcdOption {
	return func(c *etcdConfig) { c.tls = &cfg }
}

// Heartbeat and election timeouts of test clusters: short, so that elections
// after a kill and lease expiry checks are quick. With them etcd's minimum
// lease TTL is 1 s (1.5 election timeouts, rounded up to a second).
const (
	EtcdHeartbeat       = 25 * time.Millisecond
	EtcdElectionTimeout = 250 * time.Millisecond
)

// StartEtcd starts a single-member etcd cluster.
func StartEtcd(t testing.TB, opts ...EtcdOption) *Etcd {
	t.Helper()
	return StartEtcdCluster(t, 1, opts...)
}

// StartEtcdCluster starts an n-member etcd cluster on loopback and waits
// until every member reports itself healthy (it has a leader and serves
// linearizable reads). A member that exits during start-up (a port taken
// meanwhile by another process) makes it start the whole cluster again on
// new ports, up to three times.
func StartEtcdCluster(t testing.TB, n int, opts ...EtcdOption) *Etcd {
	t.Helper()
	bin := LookPath(t, "etcd", "etcd-server")
	var cfg etcdConfig
	for _, o := range opts {
		o(&cfg)
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var e *Etcd
		if e, err = startEtcdCluster(t, bin, n, cfg); err == nil {
			return e
		}
	}
	t.Fatalf("etcd cluster of %d: %v", n, err)
	return nil
}

func startEtcdCluster(t testing.TB, bin string, n int, cfg etcdConfig) (*Etcd, error) {
	e := &Etcd{tls: cfg.tls}
	token := fmt.Sprintf("dlock-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	var initial []string
	for i := 0; i < n; i++ {
		m := &EtcdMember{
			MemberName: fmt.Sprintf("m%d", i),
			ClientAddr: Addr(FreePort(t)),
			PeerAddr:   Addr(FreePort(t)),
		}
		e.Members = append(e.Members, m)
		initial = append(initial, m.MemberName+"=http://"+m.PeerAddr)
	}
	clientScheme := "http"
	if cfg.tls != nil {
		clientScheme = "https"
	}
	// Members of a cluster cannot become ready one by one: start them all,
	// each ready once it listens, then wait for cluster health.
	var wg sync.WaitGroup
	procs := make([]*Process, n)
	errs := make([]error, n)
	for i, m := range e.Members {
		dir := fastTempDir(t)
		args := []string{
			"--name", m.MemberName,
			"--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", clientScheme + "://" + m.ClientAddr,
			"--advertise-client-urls", clientScheme + "://" + m.ClientAddr,
			"--listen-peer-urls", "http://" + m.PeerAddr,
			"--initial-advertise-peer-urls", "http://" + m.PeerAddr,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", token,
			"--initial-cluster-state", "new",
			"--heartbeat-interval", fmt.Sprint(EtcdHeartbeat.Milliseconds()),
			"--election-timeout", fmt.Sprint(EtcdElectionTimeout.Milliseconds()),
			"--logger", "zap",
			"--log-outputs", "stderr",
			"--log-level", "warn",
		}
		if cfg.tls != nil {
			args = append(args, "--cert-file", cfg.tls.CertFile, "--key-file", cfg.tls.KeyFile)
			if cfg.tls.CAFile != "" {
				args = append(args, "--trusted-ca-file", cfg.tls.CAFile)
			}
			if cfg.tls.ClientCertAuth {
				args = append(args, "--client-cert-auth")
			}
		}
		spec := Spec{
			Name:  "etcd " + m.MemberName + " " + m.ClientAddr,
			Path:  bin,
			Args:  args,
			Dir:   dir,
			Ready: DialReady(m.ClientAddr),
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			procs[i], errs[i] = startProcess(t, spec)
		}()
	}
	wg.Wait()
	fail := func(err error) (*Etcd, error) {
		for _, p := range procs {
			if p != nil {
				p.Kill()
			}
		}
		return nil, err
	}
	for i, p := range procs {
		if errs[i] != nil {
			return fail(errs[i])
		}
		e.Members[i].Process = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range e.Members {
		if err := e.WaitHealthy(ctx, m); err != nil {
			return fail(fmt.Errorf("%s: %v; log tail:\n%s", m.Name(), err, m.tail()))
		}
	}
	return e, nil
}

// startProcess is Start without failing the test, for use off the test
// goroutine and for retries.
func startProcess(t testing.TB, spec Spec) (*Process, error) {
	if spec.StartTimeout == 0 {
		spec.StartTimeout = 30 * time.Second
	}
	p := &Process{t: t, spec: spec, log: filepath.Join(spec.Dir, "server.log")}
	t.Cleanup(p.Kill)
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

// fastTempDir returns a temporary directory on a memory file system when the
// machine has one (etcd fsyncs every write), else t.TempDir().
func fastTempDir(t testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "dlock-etcd-"); err == nil {
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// Endpoints returns the members' client addresses.
func (e *Etcd) Endpoints() []string {
	eps := make([]string, len(e.Members))
	for i, m := range e.Members {
		eps[i] = m.ClientAddr
	}
	return eps
}

// Addr returns the client addresses joined by commas, as an etcd:// URL's
// host part takes them.
func (e *Etcd) Addr() string { return strings.Join(e.Endpoints(), ",") }

// WaitHealthy polls m's /health endpoint until it reports healthy or ctx
// ends.
func (e *Etcd) WaitHealthy(ctx context.Context, m *EtcdMember) error {
	hc, scheme, err := e.httpClient()
	if err != nil {
		return err
	}
	var last error
	for {
		last = health(ctx, hc, scheme+"://"+m.ClientAddr+"/health")
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %v", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *Etcd) httpClient() (*http.Client, string, error) {
	if e.tls == nil {
		return &http.Client{Timeout: 2 * time.Second}, "http", nil
	}
	tc := &tls.Config{}
	if e.tls.CAFile != "" {
		pem, err := os.ReadFile(e.tls.CAFile)
		if err != nil {
			return nil, "", err
		}
		tc.RootCAs = x509.NewCertPool()
		tc.RootCAs.AppendCertsFromPEM(pem)
	}
	if e.tls.ClientCertFile != "" {
		cert, err := tls.LoadX509KeyPair(e.tls.ClientCertFile, e.tls.ClientKeyFile)
		if err != nil {
			return nil, "", err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}, "https", nil
}

func health(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var h struct {
		Health string `json:"health"`
	}
	if err := json.Unmarshal(body, &h); err != nil || h.Health != "true" {
		return fmt.Errorf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
