// Package dlockotel records a dlock Client's lock activity as OpenTelemetry
// metrics and traces, through the official OpenTelemetry Go API. It is its
// own module, so the core module does not depend on OpenTelemetry.
//
//	m, err := dlockotel.NewMetrics()                        // the global MeterProvider
//	tr := dlockotel.NewTracing()                            // the global TracerProvider
//	c, err := dlock.Open(ctx, url, m.Option(), tr.Option()) // metrics and spans of every call
//
// Tracing makes a span of every acquisition, Unlock and Refresh, under the
// caller's span, with a child span for a wait (see Tracing).
//
// The instruments (see docs/observability.md for their attributes):
//
//	dlock.acquire.duration   histogram, s: from the call to the grant
//	dlock.hold.duration      histogram, s: from the grant to the release or loss
//	dlock.acquisitions       counter: calls by outcome (granted, not_acquired, canceled, error)
//	dlock.locks.held         up-down counter: locks held now
//	dlock.waiters            up-down counter: calls waiting now
//	dlock.refreshes          counter: refreshes by outcome (ok, failed)
//	dlock.losses             counter: lost locks by cause
//	dlock.fence.rejections   counter: writes a FenceGuard refused (ObserveGuard)
//
// Every measurement carries dlock.backend (the driver's name) and
// dlock.operation (lock, try_lock, acquire, try_acquire, rlock, try_rlock).
// The key is not an attribute unless WithKeyAttribute asks for it, mapped
// (for example "invoice/123" to "invoice/*"), so that the number of series
// stays bounded by default.
package dlockotel
