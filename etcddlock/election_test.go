package etcddlock

import (
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlock-go/dlock/internal/testserver"
)

// TestElectionInterop: with an empty prefix, a dlock Election on K and
// concurrency.Election / `etcdctl elect K` on K are one election: each sees
// the other's leader and value, and each waits for the other's term.
func TestElectionInterop(t *testing.T) {
	srv := testserver.StartEtcd(t)
	url := "etcd://" + srv.Addr() + "?prefix="
	raw := rawClient(t, srv.Endpoints())
	ctx := testCtx(t, 60*time.Second)
	c := openClient(t, url)
	name := "interop/election"
	e := c.Election(name)

	// dlock leads: concurrency.Election sees its value, and waits.
	lead, err := e.Campaign(ctx, "dlock-a")
	if err != nil {
		t.Fatal(err)
	}
	ce := concurrency.NewElection(newSession(t, raw), name)
	resp, err := ce.Leader(ctx)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "dlock-a" || uint64(resp.Kvs[0].CreateRevision) != lead.Fence() {
		t.Fatalf("concurrency.Election.Leader = %+v, %v; want dlock-a at revision %d", resp, err, lead.Fence())
	}
	// Proclaim changes the value concurrency.Election reads, in the term.
	if err := e.Proclaim(ctx, lead, "dlock-a2"); err != nil {
		t.Fatalf("Proclaim: %v", err)
	}
	resp, err = ce.Leader(ctx)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "dlock-a2" || uint64(resp.Kvs[0].CreateRevision) != lead.Fence() {
		t.Fatalf("concurrency.Election.Leader after Proclaim = %+v, %v; want dlock-a2 at revision %d", resp, err, lead.Fence())
	}
	campaigned := make(chan error, 1)
	go func() { campaigned <- ce.Campaign(ctx, "go-b") }()
	select {
	case err := <-campaigned:
		t.Fatalf("concurrency.Election.Campaign returned while dlock leads: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := lead.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-campaigned:
		if err != nil {
			t.Fatalf("concurrency.Election.Campaign: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("concurrency.Election not elected 10 s after dlock resigned")
	}
	if err := ce.Proclaim(ctx, "go-b2"); err != nil {
		t.Fatal(err)
	}
	l, err := e.Leader(ctx)
	if err != nil || !l.Held || l.Value != "go-b2" || l.Fence <= lead.Fence() {
		t.Fatalf("dlock Leader while concurrency.Election leads (proclaimed go-b2) = %+v, %v; want go-b2 with a later term", l, err)
	}
	if err := ce.Resign(ctx); err != nil {
		t.Fatal(err)
	}

	// etcdctl elect leads: dlock sees it and waits; its resign elects dlock.
	ctl := startEtcdctl(t, srv.Addr(), "elect", name, "ctl-c")
	select {
	case line := <-ctl.printed:
		if !strings.HasPrefix(line, name+"/") {
			t.Fatalf("etcdctl elect printed %q, want the leader key %q/<lease>", line, name)
		}
	case err := <-ctl.exited:
		t.Fatalf("etcdctl elect exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("etcdctl elect not elected within 20 s")
	}
	if l, err := e.Leader(ctx); err != nil || !l.Held || l.Value != "ctl-c" {
		t.Fatalf("dlock Leader while etcdctl leads = %+v, %v; want ctl-c", l, err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := e.Campaign(ctx, "dlock-d")
		if err == nil {
			lead = l
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("dlock Campaign returned while etcdctl leads: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	ctl.stop(t)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("dlock Campaign after etcdctl resigned: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dlock not elected 10 s after etcdctl resigned")
	}
	if err := lead.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
