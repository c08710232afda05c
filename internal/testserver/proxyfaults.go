package testserver

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// ProxyFaults gives a fault harness the proxy half of
// drivertest.BlackholeHarness and drivertest.LatencyHarness over one or
// more proxies (one per server, for a driver over several): embed it and
// add MakeProxiedDriver.
type ProxyFaults struct {
	Proxies []*Proxy
}

// ProxyFaultsOf returns the ProxyFaults of proxies.
func ProxyFaultsOf(proxies ...*Proxy) ProxyFaults { return ProxyFaults{Proxies: proxies} }

// ProxyAddr returns the proxies' addresses, separated by commas.
func (f ProxyFaults) ProxyAddr() string {
	addrs := make([]string, len(f.Proxies))
	for i, p := range f.Proxies {
		addrs[i] = p.Addr()
	}
	return strings.Join(addrs, ",")
}

// Blackhole makes every proxy forward nothing until heal is called, or t
// ends.
func (f ProxyFaults) Blackhole(t testing.TB) (heal func()) {
	return f.until(t, func(p *Proxy) { p.Blackhole(true) }, func(p *Proxy) { p.Blackhole(false) })
}

// Delay makes every proxy hold each chunk for d in each direction until
// restore is called, or t ends.
func (f ProxyFaults) Delay(t testing.TB, d time.Duration) (restore func()) {
	return f.until(t, func(p *Proxy) { p.SetLatency(d) }, func(p *Proxy) { p.SetLatency(0) })
}

// until applies brk to every proxy and returns a function that applies
// fix, once, and at the latest when t ends.
func (f ProxyFaults) until(t testing.TB, brk, fix func(*Proxy)) func() {
	for _, p := range f.Proxies {
		brk(p)
	}
	once := sync.OnceFunc(func() {
		for _, p := range f.Proxies {
			fix(p)
		}
	})
	t.Cleanup(once)
	return once
}
