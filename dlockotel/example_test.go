package dlockotel_test

import (
	"context"
	"fmt"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/dlock-go/dlock/dlockotel"
	"github.com/dlock-go/dlock/memdlock"
)

// Record a Client's locks as OpenTelemetry metrics. A real service passes
// its MeterProvider (or none: the global one) and opens its Client from a
// URL with m.Option().
func ExampleNewMetrics() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	m, err := dlockotel.NewMetrics(dlockotel.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	c := memdlock.NewClient(m.Option())
	defer c.Close()

	ctx := context.Background()
	l, err := c.Lock(ctx, "report")
	if err != nil {
		panic(err)
	}
	_ = l.Unlock(ctx)

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(ctx, &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "dlock.acquisitions" {
			p := s.DataPoints[0]
			outcome, _ := p.Attributes.Value(dlockotel.AttrOutcome)
			backend, _ := p.Attributes.Value(dlockotel.AttrBackend)
			fmt.Println(m.Name, outcome.AsString(), backend.AsString(), p.Value)
		}
	}
	// Output: dlock.acquisitions granted memory 1
}
