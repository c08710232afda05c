package dlockotel_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	promclient "github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/dlockotel"
	"github.com/dlock-go/dlock/memdlock"
)

// TestDashboardNames: every metric and label the Grafana dashboard in
// docs/observability queries is one the Prometheus exporter gives for
// dlockotel's instruments, after a run that records each of them.
func TestDashboardNames(t *testing.T) {
	reg := promclient.NewRegistry()
	exporter, err := prometheus.New(prometheus.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	m, err := dlockotel.NewMetrics(dlockotel.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	store := memdlock.NewStore()
	c := store.NewClient(m.Option())
	defer c.Close()
	l, err := c.TryLock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryLock(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx, 0); err != nil {
		t.Fatal(err)
	}
	_ = l.Unlock(ctx)
	lost, err := c.TryLock(ctx, "gone", dlock.WithTTL(10*time.Millisecond), dlock.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	<-lost.Done()
	var g dlock.FenceGuard
	m.ObserveGuard(&g)
	_ = g.Admit("k", 2)
	_ = g.Admit("k", 1)
	w, err := c.TryLock(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(20*time.Millisecond, func() { _ = w.Unlock(context.Background()) })
	if l, err := c.Lock(ctx, "w"); err != nil {
		t.Fatal(err)
	} else {
		_ = l.Unlock(ctx)
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				have[f.GetName()+s] = true
			}
		}
		for _, mm := range f.GetMetric() {
			for _, lp := range mm.GetLabel() {
				have[lp.GetName()] = true
			}
		}
	}
	dash, err := os.ReadFile("../docs/observability/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`\bdlock_[a-z_]+`).FindAllString(string(dash), -1)
	if len(names) < 10 {
		t.Fatalf("the dashboard names only %d dlock_ metrics and labels", len(names))
	}
	for _, n := range names {
		if !have[n] {
			var known []string
			for k := range have {
				known = append(known, k)
			}
			t.Errorf("the dashboard queries %s, which the exporter does not give (it gives %s)", n, strings.Join(known, ", "))
		}
	}
}
