package dlockotel

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/dlock-go/dlock"
)

// ScopeName is the instrumentation scope of the meters dlockotel makes.
const ScopeName = "github.com/dlock-go/dlock/dlockotel"

// Attribute keys of the measurements.
const (
	AttrBackend   = attribute.Key("dlock.backend")
	AttrOperation = attribute.Key("dlock.operation")
	AttrOutcome   = attribute.Key("dlock.outcome")
	AttrCause     = attribute.Key("dlock.loss.cause")
	AttrKey       = attribute.Key("dlock.key")
)

// Outcomes of dlock.acquisitions (AttrOutcome).
const (
	OutcomeGranted     = "granted"
	OutcomeNotAcquired = "not_acquired"
	OutcomeCanceled    = "canceled"
	OutcomeError       = "error"
)

// Option configures NewMetrics.
type Option func(*config)

type config struct {
	provider metric.MeterProvider
	tracers  trace.TracerProvider
	keyAttr  func(key string) string
}

// WithMeterProvider records with mp instead of the global MeterProvider
// (otel.GetMeterProvider). Metrics only.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) {
		if mp != nil {
			c.provider = mp
		}
	}
}

// WithKeyAttribute sets the attribute dlock.key to the value fn returns
// for the lock's key; an empty value leaves the attribute out. For
// metrics, fn maps keys to few values ("invoice/123" to "invoice/*"):
// every distinct value is a time series of every instrument, and without
// it no measurement carries a key. Spans carry the key as it is unless fn
// is given.
func WithKeyAttribute(fn func(key string) string) Option {
	return func(c *config) { c.keyAttr = fn }
}

// Metrics turns a Client's lock events into OpenTelemetry measurements.
// Attach it with Option (or Hook) to every Client to observe; one Metrics
// may serve many Clients. It is safe for concurrent use.
type Metrics struct {
	cfg config

	acquireDur metric.Float64Histogram
	holdDur    metric.Float64Histogram
	acquired   metric.Int64Counter
	held       metric.Int64UpDownCounter
	waiters    metric.Int64UpDownCounter
	refreshes  metric.Int64Counter
	losses     metric.Int64Counter
	rejections metric.Int64Counter

	// sets caches the measurement options of attribute sets: setKey →
	// metric.MeasurementOption. The sets are few (backends × operations ×
	// outcomes, × mapped keys), and making one costs allocations.
	sets sync.Map
}

// setKey names a cached attribute set: the event's backend, operation and
// mapped key, and one more attribute (outcome or cause), if any.
type setKey struct {
	backend, op, key string
	extra            attribute.Key
	value            string
}

// durationBuckets are the histograms' bucket bounds in seconds: from a
// local grant (100 µs) to a long wait or hold (an hour).
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// NewMetrics makes the instruments, on the global MeterProvider unless
// WithMeterProvider says otherwise.
func NewMetrics(opts ...Option) (*Metrics, error) {
	m := &Metrics{}
	for _, o := range opts {
		o(&m.cfg)
	}
	if m.cfg.provider == nil {
		m.cfg.provider = otel.GetMeterProvider()
	}
	meter := m.cfg.provider.Meter(ScopeName)
	var err, e error
	m.acquireDur, e = meter.Float64Histogram("dlock.acquire.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from a Lock, TryLock, Acquire or RLock call to its grant, waiting included."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	m.holdDur, e = meter.Float64Histogram("dlock.hold.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a lock was held, from its grant to its release or loss."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	m.acquired, e = meter.Int64Counter("dlock.acquisitions", metric.WithUnit("{call}"),
		metric.WithDescription("Calls that asked for a lock, by outcome."))
	err = errors.Join(err, e)
	m.held, e = meter.Int64UpDownCounter("dlock.locks.held", metric.WithUnit("{lock}"),
		metric.WithDescription("Locks held now."))
	err = errors.Join(err, e)
	m.waiters, e = meter.Int64UpDownCounter("dlock.waiters", metric.WithUnit("{call}"),
		metric.WithDescription("Calls waiting for a lock now."))
	err = errors.Join(err, e)
	m.refreshes, e = meter.Int64Counter("dlock.refreshes", metric.WithUnit("{refresh}"),
		metric.WithDescription("Lease refreshes, by outcome (ok, failed)."))
	err = errors.Join(err, e)
	m.losses, e = meter.Int64Counter("dlock.losses", metric.WithUnit("{lock}"),
		metric.WithDescription("Locks lost before their release, by cause."))
	err = errors.Join(err, e)
	m.rejections, e = meter.Int64Counter("dlock.fence.rejections", metric.WithUnit("{write}"),
		metric.WithDescription("Writes a FenceGuard refused for a stale fence."))
	err = errors.Join(err, e)
	if err != nil {
		return nil, fmt.Errorf("dlockotel: making the instruments: %w", err)
	}
	return m, nil
}

// Option returns the client option that records every event of the
// Client: dlock.WithEventHook(m.Hook()).
func (m *Metrics) Option() dlock.Option { return dlock.WithEventHook(m.Hook()) }

// Hook returns the event hook that records events, for dlock.WithEventHook.
func (m *Metrics) Hook() func(dlock.Event) { return m.record }

// ObserveGuard makes g count its refusals in dlock.fence.rejections (it
// sets g.OnReject). Call it before g's first use.
func (m *Metrics) ObserveGuard(g *dlock.FenceGuard) {
	g.OnReject = func(key string, _, _ uint64) {
		m.rejections.Add(context.Background(), 1, metric.WithAttributeSet(m.keySet(key)))
	}
}

// keySet is the attribute set of a measurement that carries only the key
// (when WithKeyAttribute maps it to a value).
func (m *Metrics) keySet(key string, kv ...attribute.KeyValue) attribute.Set {
	if m.cfg.keyAttr != nil {
		if v := m.cfg.keyAttr(key); v != "" {
			kv = append(kv, AttrKey.String(v))
		}
	}
	return attribute.NewSet(kv...)
}

// options returns the cached measurement option of k's attribute set.
func (m *Metrics) options(k setKey) metric.MeasurementOption {
	if o, ok := m.sets.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	kv := []attribute.KeyValue{AttrBackend.String(k.backend), AttrOperation.String(k.op)}
	if k.key != "" {
		kv = append(kv, AttrKey.String(k.key))
	}
	if k.extra != "" {
		kv = append(kv, k.extra.String(k.value))
	}
	o, _ := m.sets.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(kv...)))
	return o.(metric.MeasurementOption)
}

func (m *Metrics) record(e dlock.Event) {
	ctx := context.Background()
	k := setKey{backend: e.Backend, op: e.Op}
	if m.cfg.keyAttr != nil {
		k.key = m.cfg.keyAttr(e.Key)
	}
	set := func(kv ...attribute.KeyValue) metric.MeasurementOption {
		k := k
		if len(kv) > 0 {
			k.extra, k.value = kv[0].Key, kv[0].Value.AsString()
		}
		return m.options(k)
	}
	switch e.Kind {
	case dlock.EventAcquired:
		m.acquireDur.Record(ctx, e.Duration.Seconds(), set())
		m.acquired.Add(ctx, 1, set(AttrOutcome.String(OutcomeGranted)))
		m.held.Add(ctx, 1, set())
	case dlock.EventFailed:
		m.acquired.Add(ctx, 1, set(AttrOutcome.String(outcome(e.Err))))
	case dlock.EventWaiting:
		m.waiters.Add(ctx, 1, set())
	case dlock.EventWaited:
		m.waiters.Add(ctx, -1, set())
	case dlock.EventReleased:
		m.holdDur.Record(ctx, e.Duration.Seconds(), set(AttrOutcome.String("released")))
		m.held.Add(ctx, -1, set())
	case dlock.EventLost:
		m.holdDur.Record(ctx, e.Duration.Seconds(), set(AttrOutcome.String("lost")))
		m.held.Add(ctx, -1, set())
		m.losses.Add(ctx, 1, set(AttrCause.String(e.Cause)))
	case dlock.EventRefreshed:
		m.refreshes.Add(ctx, 1, set(AttrOutcome.String("ok")))
	case dlock.EventRefreshFailed:
		m.refreshes.Add(ctx, 1, set(AttrOutcome.String("failed")))
	}
}

// outcome is the AttrOutcome of a call that got no lock.
func outcome(err error) string {
	switch {
	case errors.Is(err, dlock.ErrNotAcquired):
		return OutcomeNotAcquired
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	}
	return OutcomeError
}
