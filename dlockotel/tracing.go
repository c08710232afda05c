package dlockotel

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/dlock-go/dlock"
)

// Span attribute keys beyond the metrics' ones.
const (
	AttrFence    = attribute.Key("dlock.fence")
	AttrAttempts = attribute.Key("dlock.attempts")
)

// WithTracerProvider makes spans with tp instead of the global
// TracerProvider (otel.GetTracerProvider). Tracing only.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) {
		if tp != nil {
			c.tracers = tp
		}
	}
}

// Tracing makes an OpenTelemetry span of every acquisition (Lock, TryLock,
// Do, a Semaphore's Acquire, an RWMutex's RLock and Lock, and their Try
// forms) and of every Lock.Unlock and Lock.Refresh call, as a child of the
// caller's span. A call that waits gets a child span "dlock.wait" with an
// event for each release notification and each retry. Attach it with
// Option to every Client to trace; it is safe for concurrent use.
//
// Spans carry dlock.backend, dlock.operation and dlock.key (the key as it
// is, or as WithKeyAttribute maps it: an empty mapping leaves it out), and
// on their end dlock.fence and dlock.attempts. A call that ends with an
// error other than ErrNotAcquired or the end of its context has status
// Error.
type Tracing struct {
	cfg    config
	tracer trace.Tracer

	// starts caches the span start options of a backend and operation:
	// [2]string → []trace.SpanStartOption.
	starts sync.Map
}

// NewTracing makes the tracer, on the global TracerProvider unless
// WithTracerProvider says otherwise.
func NewTracing(opts ...Option) *Tracing {
	t := &Tracing{}
	for _, o := range opts {
		o(&t.cfg)
	}
	if t.cfg.tracers == nil {
		t.cfg.tracers = otel.GetTracerProvider()
	}
	t.tracer = t.cfg.tracers.Tracer(ScopeName)
	return t
}

// Option returns the client option that traces the Client's calls:
// dlock.WithCallHook(t.Hook()).
func (t *Tracing) Option() dlock.Option { return dlock.WithCallHook(t.Hook()) }

// Hook returns the call hook that makes the spans, for dlock.WithCallHook.
func (t *Tracing) Hook() dlock.CallHook { return t.start }

// callStart is what the spans of one backend and operation start with.
type callStart struct {
	name  string
	opts  []trace.SpanStartOption
	attrs []attribute.KeyValue
}

func (t *Tracing) start(ctx context.Context, call dlock.Call) (context.Context, dlock.CallObserver) {
	id := [2]string{call.Backend, call.Op}
	v, ok := t.starts.Load(id)
	if !ok {
		attrs := []attribute.KeyValue{AttrBackend.String(call.Backend), AttrOperation.String(call.Op)}
		v, _ = t.starts.LoadOrStore(id, &callStart{
			name:  "dlock." + call.Op,
			opts:  []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...)},
			attrs: attrs,
		})
	}
	cs := v.(*callStart)
	ctx, span := t.tracer.Start(ctx, cs.name, cs.opts...)
	s := &spanCall{t: t, ctx: ctx, span: span, start: cs}
	if k := t.key(call.Key); k != "" && span.IsRecording() {
		s.key = AttrKey.String(k)
		span.SetAttributes(s.key)
	}
	return ctx, s
}

// key is the dlock.key value of key: itself, or WithKeyAttribute's mapping.
func (t *Tracing) key(key string) string {
	if t.cfg.keyAttr != nil {
		return t.cfg.keyAttr(key)
	}
	return key
}

// spanCall is one traced call: its span and, while it waits, the wait's.
type spanCall struct {
	t     *Tracing
	ctx   context.Context
	span  trace.Span
	wait  trace.Span
	start *callStart
	key   attribute.KeyValue // dlock.key, when the span carries it
}

func (s *spanCall) Event(e dlock.Event) {
	switch e.Kind {
	case dlock.EventWaiting:
		if s.wait == nil && s.span.IsRecording() {
			_, s.wait = s.t.tracer.Start(s.ctx, "dlock.wait", s.start.opts[1])
			if s.key.Key != "" {
				s.wait.SetAttributes(s.key)
			}
		}
	case dlock.EventWaited:
		if s.wait != nil {
			s.wait.SetAttributes(AttrAttempts.Int(e.Attempts))
			s.wait.End()
			s.wait = nil
		}
	case dlock.EventNotified:
		if !s.span.IsRecording() {
			return
		}
		s.current().AddEvent("dlock.notified", trace.WithAttributes(AttrAttempts.Int(e.Attempts)))
	case dlock.EventRetrying:
		if !s.span.IsRecording() {
			return
		}
		attrs := []attribute.KeyValue{AttrAttempts.Int(e.Attempts), attribute.Float64("dlock.backoff", e.Duration.Seconds())}
		if e.Err != nil {
			attrs = append(attrs, attribute.String("dlock.error", e.Err.Error()))
		}
		s.current().AddEvent("dlock.retry", trace.WithAttributes(attrs...))
	}
}

// current is the wait's span while the call waits, else the call's.
func (s *spanCall) current() trace.Span {
	if s.wait != nil {
		return s.wait
	}
	return s.span
}

func (s *spanCall) End(r dlock.CallResult) {
	if s.wait != nil {
		s.wait.End()
		s.wait = nil
	}
	if !s.span.IsRecording() {
		s.span.End()
		return
	}
	if r.Fence > 0 {
		s.span.SetAttributes(AttrFence.Int64(int64(r.Fence)))
	}
	if r.Attempts > 0 {
		s.span.SetAttributes(AttrAttempts.Int(r.Attempts))
	}
	if r.Err != nil {
		s.span.SetAttributes(AttrOutcome.String(outcome(r.Err)))
		if o := outcome(r.Err); o == OutcomeError && !errors.Is(r.Err, dlock.ErrNotHeld) {
			s.span.RecordError(r.Err)
			s.span.SetStatus(codes.Error, r.Err.Error())
		}
	}
	s.span.End()
}
