package dlock

import "context"

// Call describes a Client call as it begins, for a CallHook.
type Call struct {
	// Op is the call: "lock", "try_lock", "acquire", "try_acquire",
	// "rlock" or "try_rlock" (as Event.Op), "unlock" or "refresh" (a
	// Lock's Unlock and Refresh).
	Op string
	// Key is the key of the call.
	Key string
	// Backend is the client's backend (driver.Capabilities.Backend).
	Backend string
}

// CallResult is how a call ended, for its CallObserver.
type CallResult struct {
	// Fence is the lock's fence: the one granted (for an acquisition) or
	// the lock's (for Unlock and Refresh); 0 when none was granted.
	Fence uint64
	// Attempts counts the attempts of an acquisition.
	Attempts int
	// Err is the call's error, nil when it succeeded.
	Err error
}

// CallObserver follows one call that a CallHook saw begin: it receives the
// call's events (EventWaiting, EventRetrying, EventNotified, EventWaited,
// EventAcquired, EventFailed, EventReleased, EventRefreshed, ...) as they
// happen, then End once. Its methods are called from the call's goroutine,
// synchronously, and must be fast.
type CallObserver interface {
	Event(Event)
	End(CallResult)
}

// CallHook is told as a Client's call begins (an acquisition, a Lock's
// Unlock or Refresh), with the caller's context. The call runs with the
// context the hook returns (which may carry a span: package dlockotel's
// tracing starts one there), and reports to the returned observer; a nil
// observer follows nothing.
type CallHook func(ctx context.Context, call Call) (context.Context, CallObserver)

// WithCallHook adds a CallHook to the Client; each call adds one, and they
// are called in the order given, each with the context the one before
// returned. Default: none.
func WithCallHook(h CallHook) Option {
	return func(c *clientConfig) {
		if h != nil {
			c.callHooks = append(c.callHooks, h)
		}
	}
}

// observers are the CallObservers of one call.
type observers []CallObserver

func (o observers) event(e Event) {
	for _, x := range o {
		x.Event(e)
	}
}

func (o observers) end(r CallResult) {
	for _, x := range o {
		x.End(r)
	}
}

// startCall runs the client's CallHooks for call, returning the context
// the call runs with and its observers.
func (c *Client) startCall(ctx context.Context, call Call) (context.Context, observers) {
	if len(c.cfg.callHooks) == 0 {
		return ctx, nil
	}
	call.Backend = c.caps.Backend
	var obs observers
	for _, h := range c.cfg.callHooks {
		var o CallObserver
		ctx, o = h(ctx, call)
		if o != nil {
			obs = append(obs, o)
		}
	}
	return ctx, obs
}
