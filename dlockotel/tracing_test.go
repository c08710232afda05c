package dlockotel_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/dlockotel"
	"github.com/dlock-go/dlock/internal/testserver"
)

// attr is the value of span's attribute k ("" when it has none).
func attr(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value.String()
		}
	}
	return ""
}

// TestTracing: against a real Redis, every acquisition, Unlock and Refresh
// is a span under the caller's, with the backend, operation, key and fence;
// a call that waits has a dlock.wait child span with the release
// notification that woke it; a refusal is not an error, a closed client is.
func TestTracing(t *testing.T) {
	srv := testserver.StartRedis(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	tr := dlockotel.NewTracing(dlockotel.WithTracerProvider(tp))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	open := func() *dlock.Client {
		c, err := dlock.Open(ctx, srv.URL(), tr.Option())
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := open(), open()
	pctx, parent := tp.Tracer("test").Start(ctx, "caller")

	la, err := a.TryLock(pctx, "k")
	if err != nil {
		t.Fatalf("TryLock: %v", err)
	}
	if _, err := b.TryLock(pctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock of a held key = %v", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = la.Unlock(pctx)
	}()
	lb, err := b.Lock(pctx, "k")
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if err := lb.Refresh(pctx, 0); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if err := lb.Unlock(pctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	closed := open()
	_ = closed.Close()
	if _, err := closed.Lock(pctx, "k"); !errors.Is(err, dlock.ErrClosed) {
		t.Fatalf("Lock on a closed client = %v", err)
	}
	parent.End()

	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	pid := parent.SpanContext().SpanID()
	for name, n := range map[string]int{"dlock.try_lock": 2, "dlock.lock": 2, "dlock.wait": 1, "dlock.refresh": 1, "dlock.unlock": 2} {
		if got := len(byName[name]); got != n {
			t.Errorf("%d %s spans, want %d", got, name, n)
		}
	}
	for name, spans := range byName {
		for _, s := range spans {
			if name == "caller" {
				continue
			}
			if name != "dlock.wait" && s.Parent().SpanID() != pid {
				t.Errorf("%s's parent is %v, want the caller's span", name, s.Parent().SpanID())
			}
			if attr(s, dlockotel.AttrBackend) != "redis" || attr(s, dlockotel.AttrKey) != "k" {
				t.Errorf("%s: backend %q, key %q; want redis, k", name, attr(s, dlockotel.AttrBackend), attr(s, dlockotel.AttrKey))
			}
		}
	}
	var granted, refused int
	for _, s := range byName["dlock.try_lock"] {
		switch {
		case attr(s, dlockotel.AttrFence) != "" && s.Status().Code == codes.Unset:
			granted++
		case attr(s, dlockotel.AttrOutcome) == dlockotel.OutcomeNotAcquired && s.Status().Code == codes.Unset:
			refused++
		}
	}
	if granted != 1 || refused != 1 {
		t.Errorf("try_lock spans: %d granted with a fence, %d refused without an error status; want 1 and 1", granted, refused)
	}
	var waitedLock sdktrace.ReadOnlySpan
	var errored int
	for _, s := range byName["dlock.lock"] {
		if s.Status().Code == codes.Error {
			errored++
		} else {
			waitedLock = s
		}
	}
	if errored != 1 || waitedLock == nil {
		t.Fatalf("lock spans: %d with an error status; want the closed client's 1 and the waiting Lock's", errored)
	}
	if n, _ := strconv.Atoi(attr(waitedLock, dlockotel.AttrAttempts)); attr(waitedLock, dlockotel.AttrFence) == "" || n < 2 {
		t.Errorf("the waiting Lock's span: fence %q, attempts %q; want a fence and 2 or more attempts", attr(waitedLock, dlockotel.AttrFence), attr(waitedLock, dlockotel.AttrAttempts))
	}
	if w := byName["dlock.wait"]; len(w) == 1 {
		if w[0].Parent().SpanID() != waitedLock.SpanContext().SpanID() {
			t.Errorf("dlock.wait's parent is not the waiting Lock's span")
		}
		var notified bool
		for _, ev := range w[0].Events() {
			notified = notified || ev.Name == "dlock.notified"
		}
		if !notified {
			t.Errorf("dlock.wait has no dlock.notified event: %v", w[0].Events())
		}
	}
}
