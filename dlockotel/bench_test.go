package dlockotel_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/dlockotel"
	"github.com/dlock-go/dlock/memdlock"
)

// BenchmarkLockUnlock measures what the metrics and the traces add to an
// uncontended Lock+Unlock on the in-memory backend (whose cycle is a few
// µs, so the difference is the instrumentation's cost).
func BenchmarkLockUnlock(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	m, err := dlockotel.NewMetrics(dlockotel.WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	tr := dlockotel.NewTracing(dlockotel.WithTracerProvider(tp))
	for _, c := range []struct {
		name string
		opts []dlock.Option
	}{
		{"plain", nil},
		{"metrics", []dlock.Option{m.Option()}},
		{"traces", []dlock.Option{tr.Option()}},
		{"both", []dlock.Option{m.Option(), tr.Option()}},
	} {
		b.Run(c.name, func(b *testing.B) {
			cl := memdlock.NewClient(c.opts...)
			defer cl.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				l, err := cl.Lock(ctx, "k")
				if err != nil {
					b.Fatal(err)
				}
				_ = l.Unlock(ctx)
			}
		})
	}
}
