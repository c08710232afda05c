package testserver

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a redis-server started by StartRedis. It listens on 127.0.0.1
// only, keeps nothing on disk (no RDB snapshots, no AOF), so Restart brings
// it back empty, as a crash of a server without persistence would.
type Redis struct {
	*Process
	// Port is the TCP port on 127.0.0.1 (the TLS port when TLS is on).
	Port int
	// Password is the requirepass password, or "".
	Password string
	// Dir is the server's working directory; it survives Restart.
	Dir string
	// CAFile is the PEM file of the certificate authority that signed the
	// server's certificate when TLS is on, else "".
	CAFile string
	// TLS is a client configuration trusting the server's certificate when
	// TLS is on, else nil.
	TLS *tls.Config

	clusterBusPort int
}

// RedisOption configures StartRedis.
type RedisOption func(*redisOptions)

type redisOptions struct {
	password string
	tls      bool
	args     []string
	cluster  bool
}

// RedisPassword makes the server require a password (requirepass).
func RedisPassword(pw string) RedisOption {
	return func(o *redisOptions) { o.password = pw }
}

// RedisTLS makes the server speak TLS only, with a certificate for
// 127.0.0.1 signed by a throw-away certificate authority (see Redis.CAFile
// and Redis.TLS). Clients need no certificate of their own.
func RedisTLS() RedisOption {
	return func(o *redisOptions) { o.tls = true }
}

// RedisArg adds a redis-server command-line argument, e.g.
// RedisArg("--maxmemory"), RedisArg("10mb").
func RedisArg(arg string) RedisOption {
	return func(o *redisOptions) { o.args = append(o.args, arg) }
}

func redisCluster() RedisOption {
	return func(o *redisOptions) { o.cluster = true }
}

// StartRedis runs redis-server (Debian package redis-server) on a free
// loopback port in a temporary directory until the test ends, and waits
// until it answers PING. Persistence is off. A Redlock test that needs N
// independent servers calls StartRedis N times.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	bin := LookPath(t, "redis-server", "redis-server")
	var o redisOptions
	for _, opt := range opts {
		opt(&o)
	}
	r := &Redis{Port: FreePort(t), Password: o.password, Dir: t.TempDir()}
	args := []string{
		"--bind", "127.0.0.1",
		"--dir", r.Dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--logfile", "",
		"--loglevel", "notice",
	}
	if o.tls {
		if err := r.makeCertificates(); err != nil {
			t.Fatalf("redis-server: %v", err)
		}
		args = append(args,
			"--port", "0",
			"--tls-port", strconv.Itoa(r.Port),
			"--tls-cert-file", filepath.Join(r.Dir, "server.crt"),
			"--tls-key-file", filepath.Join(r.Dir, "server.key"),
			"--tls-ca-cert-file", r.CAFile,
			"--tls-auth-clients", "no",
		)
	} else {
		args = append(args, "--port", strconv.Itoa(r.Port))
	}
	if o.password != "" {
		args = append(args, "--requirepass", o.password)
	}
	if o.cluster {
		r.clusterBusPort = FreePort(t)
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
			"--cluster-port", strconv.Itoa(r.clusterBusPort),
		)
		if o.password != "" {
			args = append(args, "--masterauth", o.password)
		}
	}
	args = append(args, o.args...)
	r.Process = Start(t, Spec{
		Name: fmt.Sprintf("redis-server :%d", r.Port),
		Path: bin,
		Args: args,
		Dir:  r.Dir,
		Ready: func(ctx context.Context) error {
			_, err := r.Do(ctx, "PING")
			return err
		},
		StartTimeout: 20 * time.Second,
	})
	return r
}

// Addr returns "127.0.0.1:port".
func (r *Redis) Addr() string { return Addr(r.Port) }

// URL returns a redis:// (or, with TLS, rediss://) URL for the server, with
// the password when there is one. TLS URLs do not name the CA file; add
// tls_ca_file=CAFile.
func (r *Redis) URL() string {
	u := url.URL{Scheme: "redis", Host: r.Addr()}
	if r.TLS != nil {
		u.Scheme = "rediss"
	}
	if r.Password != "" {
		u.User = url.UserPassword("", r.Password)
	}
	return u.String()
}

// Do sends one command on a new connection and returns the reply as text:
// simple strings, integers and bulk strings as they are, arrays as their
// elements joined by newlines, nil as "". A Redis error reply is returned as
// an error. It is meant for set-up and fault injection in tests, not speed.
func (r *Redis) Do(ctx context.Context, args ...string) (string, error) {
	var d net.Dialer
	var conn net.Conn
	var err error
	if r.TLS != nil {
		td := tls.Dialer{NetDialer: &d, Config: r.TLS}
		conn, err = td.DialContext(ctx, "tcp", r.Addr())
	} else {
		conn, err = d.DialContext(ctx, "tcp", r.Addr())
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	rd := bufio.NewReader(conn)
	if r.Password != "" {
		if _, err := redisRoundTrip(conn, rd, "AUTH", r.Password); err != nil {
			return "", fmt.Errorf("AUTH: %w", err)
		}
	}
	return redisRoundTrip(conn, rd, args...)
}

func redisRoundTrip(w io.Writer, rd *bufio.Reader, args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return "", err
	}
	return redisReadReply(rd)
}

func redisReadReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply line")
	}
	switch body := line[1:]; line[0] {
	case '+', ':':
		return body, nil
	case '-':
		return "", errors.New(body)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", body)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", fmt.Errorf("bad array length %q", body)
		}
		parts := make([]string, 0, max(n, 0))
		for i := 0; i < n; i++ {
			p, err := redisReadReply(rd)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// Info returns the value of one field of INFO section (e.g.
// Info(ctx, "server", "redis_version")), or "" when absent.
func (r *Redis) Info(ctx context.Context, section, field string) (string, error) {
	out, err := r.Do(ctx, "INFO", section)
	if err != nil {
		return "", err
	}
	return redisInfoField(out, field), nil
}

func redisInfoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// makeCertificates writes a CA and a server certificate for 127.0.0.1 into
// r.Dir and sets r.CAFile and r.TLS.
func (r *Redis) makeCertificates() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dlock test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return err
	}
	files := []struct {
		name, typ string
		der       []byte
	}{
		{"ca.crt", "CERTIFICATE", caDER},
		{"server.crt", "CERTIFICATE", srvDER},
		{"server.key", "EC PRIVATE KEY", srvKeyDER},
	}
	for _, f := range files {
		data := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(filepath.Join(r.Dir, f.name), data, 0o600); err != nil {
			return err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	r.CAFile = filepath.Join(r.Dir, "ca.crt")
	r.TLS = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	return nil
}

// RedisCluster is a Redis Cluster of masters without replicas started by
// StartRedisCluster. Each node is a Redis whose Restart brings it back with
// its cluster identity and slots (kept in nodes.conf) but no data.
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts masters redis-server nodes (at least 3 is the
// usual shape) with cluster mode on, splits the 16384 slots between them,
// joins them, and waits until every node reports cluster_state:ok.
func StartRedisCluster(t testing.TB, masters int, opts ...RedisOption) *RedisCluster {
	t.Helper()
	if masters < 1 {
		t.Fatalf("StartRedisCluster: %d masters", masters)
	}
	c := &RedisCluster{}
	opts = append(append([]RedisOption(nil), opts...), redisCluster())
	for i := 0; i < masters; i++ {
		c.Nodes = append(c.Nodes, StartRedis(t, opts...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.create(ctx); err != nil {
		t.Fatalf("redis cluster: %v", err)
	}
	if err := c.WaitOK(ctx); err != nil {
		t.Fatalf("redis cluster: %v", err)
	}
	return c
}

func (c *RedisCluster) create(ctx context.Context) error {
	const slots = 16384
	n := len(c.Nodes)
	for i, node := range c.Nodes {
		if _, err := node.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1)); err != nil {
			return fmt.Errorf("%s: SET-CONFIG-EPOCH: %w", node.Addr(), err)
		}
		lo, hi := i*slots/n, (i+1)*slots/n
		args := []string{"CLUSTER", "ADDSLOTS"}
		for s := lo; s < hi; s++ {
			args = append(args, strconv.Itoa(s))
		}
		if _, err := node.Do(ctx, args...); err != nil {
			return fmt.Errorf("%s: ADDSLOTS: %w", node.Addr(), err)
		}
	}
	for _, node := range c.Nodes[1:] {
		_, err := c.Nodes[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(node.Port), strconv.Itoa(node.clusterBusPort))
		if err != nil {
			return fmt.Errorf("%s: MEET %s: %w", c.Nodes[0].Addr(), node.Addr(), err)
		}
	}
	return nil
}

// WaitOK waits until every running node reports cluster_state:ok, knows
// every node and sees all slots assigned.
func (c *RedisCluster) WaitOK(ctx context.Context) error {
	want := strconv.Itoa(len(c.Nodes))
	for {
		var last error
		for _, node := range c.Nodes {
			out, err := node.Do(ctx, "CLUSTER", "INFO")
			switch {
			case err != nil:
				last = fmt.Errorf("%s: %w", node.Addr(), err)
			case redisInfoField(out, "cluster_state") != "ok",
				redisInfoField(out, "cluster_known_nodes") != want,
				redisInfoField(out, "cluster_slots_ok") != "16384":
				last = fmt.Errorf("%s: not ready: %s", node.Addr(), strings.Join(strings.Fields(out)[:min(6, len(strings.Fields(out)))], " "))
			}
			if last != nil {
				break
			}
		}
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ok: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Addrs returns the nodes' "127.0.0.1:port" addresses.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns a redis+cluster:// URL naming every node.
func (c *RedisCluster) URL() string {
	u := url.URL{Scheme: "redis+cluster", Host: strings.Join(c.Addrs(), ",")}
	if c.Nodes[0].TLS != nil {
		u.Scheme = "rediss+cluster"
	}
	if pw := c.Nodes[0].Password; pw != "" {
		u.User = url.UserPassword("", pw)
	}
	return u.String()
}

// StartRedisSentinel runs a Redis Sentinel (redis-server --sentinel) on a
// free loopback port that monitors master under the name masterName, with a
// quorum of one, and waits until it reports the master's address. The
// returned Redis's Port is the Sentinel's port; the Sentinel itself needs
// no password.
func StartRedisSentinel(t testing.TB, master *Redis, masterName string) *Redis {
	t.Helper()
	bin := LookPath(t, "redis-server", "redis-server")
	s := &Redis{Port: FreePort(t), Dir: t.TempDir()}
	conf := []string{
		"port " + strconv.Itoa(s.Port),
		"bind 127.0.0.1",
		"daemonize no",
		"protected-mode no",
		`logfile ""`,
		"dir " + s.Dir,
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1", masterName, master.Port),
		fmt.Sprintf("sentinel down-after-milliseconds %s 2000", masterName),
	}
	if master.Password != "" {
		conf = append(conf, fmt.Sprintf("sentinel auth-pass %s %s", masterName, master.Password))
	}
	path := filepath.Join(s.Dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("redis sentinel: %v", err)
	}
	s.Process = Start(t, Spec{
		Name: fmt.Sprintf("redis-sentinel :%d", s.Port),
		Path: bin,
		Args: []string{path, "--sentinel"},
		Dir:  s.Dir,
		Ready: func(ctx context.Context) error {
			out, err := s.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName)
			if err != nil {
				return err
			}
			if out != "127.0.0.1\n"+strconv.Itoa(master.Port) {
				return fmt.Errorf("sentinel reports master %q", out)
			}
			return nil
		},
		StartTimeout: 20 * time.Second,
	})
	return s
}

// StartRedisNodes starts n independent redis-servers with StartRedis (no
// replication between them, no persistence): the nodes of a Redlock test.
func StartRedisNodes(t testing.TB, n int, opts ...RedisOption) []*Redis {
	t.Helper()
	nodes := make([]*Redis, n)
	for i := range nodes {
		nodes[i] = StartRedis(t, opts...)
	}
	return nodes
}

// RedlockURL returns a redlock:// URL naming nodes (redlocks:// when they
// speak TLS), with the first node's password when it has one. TLS URLs do
// not name the CA file; add tls_ca_file=CAFile.
func RedlockURL(nodes ...*Redis) string {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr()
	}
	u := url.URL{Scheme: "redlock", Host: strings.Join(addrs, ",")}
	if len(nodes) > 0 && nodes[0].TLS != nil {
		u.Scheme = "redlocks"
	}
	if len(nodes) > 0 && nodes[0].Password != "" {
		u.User = url.UserPassword("", nodes[0].Password)
	}
	return u.String()
}
