package zkdlock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
)

// More ZooKeeper opcodes, as sent on the wire (see fault_test.go).
const (
	opDelete    = 2
	opGetData   = 4
	opPing      = 11
	opChildren2 = 12
)

// opCounter counts, by opcode, the requests a go-zookeeper connection made
// with its dialer sends (pings and the connect request aside): go-zookeeper
// writes each packet in one Write.
type opCounter struct {
	mu  sync.Mutex
	ops map[int32]int
}

func newOpCounter() *opCounter { return &opCounter{ops: map[int32]int{}} }

func (o *opCounter) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	return &opConn{Conn: c, o: o}, nil
}

// snapshot returns the counts so far.
func (o *opCounter) snapshot() map[int32]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[int32]int, len(o.ops))
	for k, v := range o.ops {
		m[k] = v
	}
	return m
}

// since returns the counts added after snapshot s, and their total.
func (o *opCounter) since(s map[int32]int) (map[int32]int, int) {
	m := o.snapshot()
	total := 0
	for k := range m {
		m[k] -= s[k]
		total += m[k]
	}
	return m, total
}

type opConn struct {
	net.Conn
	o         *opCounter
	connected bool // the first packet, the connect request, was sent
}

func (c *opConn) Write(p []byte) (int, error) {
	if !c.connected {
		c.connected = true
	} else if len(p) >= 12 {
		if op := int32(binary.BigEndian.Uint32(p[8:12])); op != opPing {
			c.o.mu.Lock()
			c.o.ops[op]++
			c.o.mu.Unlock()
		}
	}
	return c.Conn.Write(p)
}

func TestPosition(t *testing.T) {
	kids := []string{"_c_aa-lock-0000000007", "x", "_c_bb-lock-0000000003", "_c_cc-lock-0000000005", "_c_dd-lock-0000000009"}
	p := position(kids, "_c_cc-lock-0000000005", 5)
	want := queuePos{found: true, lowest: "_c_bb-lock-0000000003", pred: "_c_bb-lock-0000000003", count: 4, ahead: 1, maxSeq: 9, last: "_c_dd-lock-0000000009"}
	if p != want {
		t.Errorf("position = %+v, want %+v", p, want)
	}
	p = position(kids, "_c_ee-lock-0000000010", 10) // not listed: a listing made before its create
	if p.found || p.ahead != 4 || p.pred != "_c_dd-lock-0000000009" || p.last != "_c_dd-lock-0000000009" || p.maxSeq != 9 {
		t.Errorf("position of an unlisted node = %+v", p)
	}
	if p := position([]string{"x"}, "", -1); p.count != 0 || p.maxSeq != -1 || p.last != "" || p.lowest != "" {
		t.Errorf("position without lock nodes = %+v", p)
	}
}

// TestAwaitEarly: how a listing sent together with the create is read.
func TestAwaitEarly(t *testing.T) {
	d := newDriver("/b", zk.WorldACL(zk.PermAll), "test")
	const keyCzxid = 100
	// n was created by the transaction with zxid 500, as the key node's
	// third child; its sequence number is 12.
	n := &node{keyPath: "/b/k", name: "_c_nn-lock-0000000012", seq: 12, fence: 500, keyCzxid: keyCzxid, siblings: 3}
	before := []string{"_c_aa-lock-0000000010", "_c_bb-lock-0000000011"}
	stat := func(mzxid int64) *zk.Stat { return &zk.Stat{Czxid: keyCzxid, Mzxid: mzxid} }
	for _, tc := range []struct {
		name string
		n    node
		l    listing
		pre  bool
		pred string
		last bool
	}{
		{name: "listed after the create", n: *n, l: listing{kids: children{append(before, n.name), stat(500)}}, pre: true},
		{name: "listed after a later create", n: *n, l: listing{kids: children{append(before, n.name), stat(520)}}, pre: true},
		{name: "listed before, none joined between", n: *n, l: listing{kids: children{before, stat(480)}}, pred: "_c_bb-lock-0000000011"},
		{name: "listed before, second child", n: func() node { m := *n; m.siblings = 2; return m }(), l: listing{kids: children{before, stat(480)}}, pred: "_c_bb-lock-0000000011", last: true},
		{name: "listed before, one joined between", n: func() node { m := *n; m.seq = 13; return m }(), l: listing{kids: children{before, stat(480)}}},
		{name: "listed before, no lock node", n: *n, l: listing{kids: children{[]string{"x"}, stat(480)}}},
		{name: "another key node", n: *n, l: listing{kids: children{before, &zk.Stat{Czxid: keyCzxid + 1, Mzxid: 480}}}},
		{name: "no fence from the create", n: func() node { m := *n; m.fence = 0; return m }(), l: listing{kids: children{before, stat(480)}}},
		{name: "listing failed", n: *n, l: listing{err: zk.ErrNoNode}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan listing, 1)
			ch <- tc.l
			pre, pred, last, err := d.awaitEarly(context.Background(), &tc.n, ch)
			if err != nil || (pre != nil) != tc.pre || pred != tc.pred || last != tc.last {
				t.Errorf("awaitEarly = pre %v, pred %q, last %v, %v; want pre %v, pred %q, last %v", pre != nil, pred, last, err, tc.pre, tc.pred, tc.last)
			}
		})
	}
	if pre, pred, _, err := d.awaitEarly(context.Background(), n, nil); pre != nil || pred != "" || err != nil {
		t.Errorf("awaitEarly without a listing = %v, %q, %v", pre, pred, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, _, err := d.awaitEarly(ctx, n, make(chan listing)); !errors.Is(err, context.Canceled) {
		t.Errorf("awaitEarly with an ended ctx = %v, want context.Canceled", err)
	}
}

// TestRequestsOnTheWire counts what a client sends: a lock on a free key is
// one transaction (no listing) and a release one delete; a waiter behind
// the holder alone takes the key on its deletion without another request;
// on a key that had a queue, the listing goes out with the create.
func TestRequestsOnTheWire(t *testing.T) {
	z := startStandalone(t)
	const base = "/wire"
	opts := Options{Base: base, SessionTimeout: 10 * time.Second}
	newClient := func(o *opCounter) *dlock.Client {
		var dial zk.Dialer
		if o != nil {
			dial = o.dial
		}
		c, err := NewClient(connect(t, z.Addrs(), 10*time.Second, dial), opts, dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ca, cb := newOpCounter(), newOpCounter()
	a, b, other := newClient(ca), newClient(cb), newClient(nil)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// A free key: the create's transaction proves the node first.
	l, err := a.Lock(ctx, "free")
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Unlock(ctx)
	s := ca.snapshot()
	for i := 0; i < 5; i++ {
		l, err := a.Lock(ctx, "free")
		if err != nil {
			t.Fatal(err)
		}
		if in, err := other.Inspect(ctx, "free"); err != nil || in.Fence != l.Fence() {
			t.Fatalf("Inspect = %+v, %v; want the holder's fence %d", in, err, l.Fence())
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ops, total := ca.since(s); ops[opMulti] != 5 || ops[opDelete] != 5 || total != 10 {
		t.Errorf("5 cycles on a free key sent %v, want 5 multis and 5 deletes", ops)
	}

	// queued waits until Inspect shows n waiters on key.
	queued := func(key string, n int) {
		t.Helper()
		for {
			in, err := other.Inspect(ctx, key)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if in.Waiters == n {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%d waiters on %s never showed", n, key)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	// watching waits until o's connection has sent n watches (getData)
	// since snapshot s.
	watching := func(o *opCounter, s map[int32]int, n int) {
		t.Helper()
		for {
			if ops, _ := o.since(s); ops[opGetData] >= n {
				return
			}
			select {
			case <-ctx.Done():
				ops, _ := o.since(s)
				t.Fatalf("no watch request; sent %v", ops)
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	lockAsync := func(c *dlock.Client, key string) <-chan *dlock.Lock {
		ch := make(chan *dlock.Lock, 1)
		go func() {
			l, err := c.Lock(ctx, key)
			if err != nil {
				t.Errorf("Lock(%s): %v", key, err)
			}
			ch <- l
		}()
		return ch
	}

	// B waits behind A alone: A's deletion is B's grant.
	la, err := a.Lock(ctx, "hot")
	if err != nil {
		t.Fatal(err)
	}
	s = cb.snapshot()
	got := lockAsync(b, "hot")
	watching(cb, s, 1)
	s = cb.snapshot()
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	lb := <-got
	if lb == nil {
		t.FailNow()
	}
	if ops, total := cb.since(s); total != 0 {
		t.Errorf("the waiter sent %v after the holder's release, want nothing", ops)
	}
	if lb.Fence() <= la.Fence() {
		t.Errorf("fence %d after %d, want greater", lb.Fence(), la.Fence())
	}

	// B's key had a queue: B's next join sends the listing with the create
	// and then watches, and FIFO order and fences hold.
	if err := lb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	la, err = a.Lock(ctx, "hot")
	if err != nil {
		t.Fatal(err)
	}
	lc := lockAsync(other, "hot")
	queued("hot", 1)
	s = cb.snapshot()
	got = lockAsync(b, "hot")
	watching(cb, s, 1)
	if ops, total := cb.since(s); ops[opMulti] != 1 || ops[opChildren2] != 1 || ops[opGetData] != 1 || total != 3 {
		t.Errorf("joining a queue sent %v, want a multi, a listing and a watch", ops)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := <-lc
	if l2 == nil {
		t.FailNow()
	}
	select {
	case l := <-got:
		t.Fatalf("the last waiter got the key (fence %d) before the one ahead of it released", l.Fence())
	case <-time.After(100 * time.Millisecond):
	}
	if err := l2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	l3 := <-got
	if l3 == nil {
		t.FailNow()
	}
	if !(la.Fence() < l2.Fence() && l2.Fence() < l3.Fence()) {
		t.Errorf("fences %d, %d, %d: want increasing", la.Fence(), l2.Fence(), l3.Fence())
	}
	_ = l3.Unlock(ctx)
}

// TestHotKeyExclusion: dlock clients and a zk.Lock take one key in a loop.
// No two hold it at once, and dlock's fences increase in grant order.
func TestHotKeyExclusion(t *testing.T) {
	z := startStandalone(t)
	const base, key, clients, rounds = "/hot", "k", 4, 25
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	var (
		holders atomic.Int32
		mu      sync.Mutex
		fences  []uint64
		wg      sync.WaitGroup
	)
	hold := func(fence uint64) error {
		if n := holders.Add(1); n != 1 {
			return fmt.Errorf("%d holders at once", n)
		}
		if fence != 0 {
			mu.Lock()
			fences = append(fences, fence)
			mu.Unlock()
		}
		time.Sleep(200 * time.Microsecond)
		holders.Add(-1)
		return nil
	}
	check := newOpCounter()
	for i := 0; i < clients; i++ {
		c, err := NewClient(connect(t, z.Addrs(), 10*time.Second, check.dial), Options{Base: base, SessionTimeout: 10 * time.Second},
			dlock.WithLockDefaults(dlock.WithTTL(10*time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds && ctx.Err() == nil; r++ {
				l, err := c.Lock(ctx, key)
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				err = hold(l.Fence())
				if uerr := l.Unlock(ctx); err == nil {
					err = uerr
				}
				if err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
			}
		}()
	}
	zl := zk.NewLock(connect(t, z.Addrs(), 10*time.Second, nil), Path(base, key), zk.WorldACL(zk.PermAll))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := 0; r < rounds && ctx.Err() == nil; r++ {
			if err := zl.Lock(); err != nil {
				t.Errorf("zk.Lock: %v", err)
				return
			}
			err := hold(0)
			if uerr := zl.Unlock(); err == nil {
				err = uerr
			}
			if err != nil {
				t.Errorf("zk.Lock: %v", err)
				return
			}
		}
	}()
	within(t, 90*time.Second, "the contenders", wg.Wait)
	if len(fences) != clients*rounds {
		t.Fatalf("%d dlock grants, want %d", len(fences), clients*rounds)
	}
	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			t.Fatalf("grant %d: fence %d after %d, want increasing", i, fences[i], fences[i-1])
		}
	}
	ops, _ := check.since(nil)
	t.Logf("%d dlock acquisitions sent %v", len(fences), ops)
}
