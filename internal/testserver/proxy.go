package testserver

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 in front of a real server, for fault
// tests: it adds latency, stops forwarding (a network partition), and resets
// connections. Point the client at Proxy.Addr instead of the server. The
// zero value is not usable; start one with StartProxy.
type Proxy struct {
	t      testing.TB
	target string
	ln     net.Listener

	mu        sync.Mutex
	latency   time.Duration
	blackhole bool
	open      chan struct{} // closed while not blackholed
	conns     map[*proxyConn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

type proxyConn struct {
	client, server *net.TCPConn
	once           sync.Once
	dead           chan struct{} // closed by reset
}

// reset closes both sides with SO_LINGER 0, so each peer sees a TCP RST.
func (c *proxyConn) reset() {
	c.once.Do(func() {
		close(c.dead)
		for _, conn := range []*net.TCPConn{c.client, c.server} {
			if conn != nil {
				_ = conn.SetLinger(0)
				_ = conn.Close()
			}
		}
	})
}

// StartProxy listens on a free loopback port and forwards every connection
// to target ("host:port"). It is closed when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listen: %v", err)
	}
	p := &Proxy{t: t, target: target, ln: ln, open: make(chan struct{}), conns: map[*proxyConn]struct{}{}}
	close(p.open)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// SetLatency delays every chunk of data by d in each direction (a round trip
// gains 2d). Order is kept. Zero removes the delay for data read from then
// on.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = max(d, 0)
	p.mu.Unlock()
}

// Blackhole turns a partition on or off. While on, the proxy still accepts
// connections (and connects them to the server) but forwards nothing in
// either direction: requests and replies wait in the proxy, as packets wait
// in TCP retransmission while a link is down, and flow again when the
// partition is turned off. Combine with ResetAll to drop them instead.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.blackhole {
		return
	}
	p.blackhole = on
	if on {
		p.open = make(chan struct{})
	} else {
		close(p.open)
	}
}

// ResetAll closes every current connection with a TCP RST to both the
// client and the server (SO_LINGER 0). Data held in the proxy is dropped.
// New connections are accepted as usual.
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
}

// Connections returns the number of proxied connections open now.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, resets every connection and waits for the proxy's
// goroutines. It is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.blackhole {
		p.blackhole = false
		close(p.open)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.ResetAll()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c.(*net.TCPConn))
	}
}

func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	pc := &proxyConn{client: client, dead: make(chan struct{})}
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		pc.reset() // the client sees its connection reset: the server is down
		return
	}
	pc.server = server.(*net.TCPConn)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.reset()
		return
	}
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		pc.reset()
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(pc, client, pc.server) }()
	go func() { defer wg.Done(); p.pipe(pc, pc.server, client) }()
	wg.Wait()
}

type proxyChunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst through a queue, so that latency delays chunks
// without stopping the reads, and a blackhole holds them.
func (p *Proxy) pipe(pc *proxyConn, src, dst *net.TCPConn) {
	queue := make(chan proxyChunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range queue {
			if !p.waitOpen(ch.due, pc.dead) {
				return
			}
			if _, err := dst.Write(ch.data); err != nil {
				pc.reset()
				return
			}
		}
		// src reached EOF: pass the half-close on.
		_ = dst.CloseWrite()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			lat := p.latency
			p.mu.Unlock()
			select {
			case queue <- proxyChunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(lat)}:
			case <-done:
				return
			}
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				pc.reset()
			}
			// On EOF the writer forwards what is queued, then half-closes.
			close(queue)
			<-done
			return
		}
	}
}

// waitOpen sleeps until due and until no blackhole is on. It returns false
// when the connection is reset or the proxy closed meanwhile.
func (p *Proxy) waitOpen(due time.Time, dead <-chan struct{}) bool {
	if d := time.Until(due); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-dead:
			t.Stop()
			return false
		}
	}
	for {
		p.mu.Lock()
		open, closed := p.open, p.closed
		p.mu.Unlock()
		if closed {
			return false
		}
		select {
		case <-open:
		case <-dead:
			return false
		}
		p.mu.Lock()
		still := !p.blackhole
		p.mu.Unlock()
		if still {
			return true
		}
	}
}
