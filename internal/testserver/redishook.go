package testserver

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RoundTripHook is a go-redis hook that counts each command and each
// pipeline a client sends (one round trip to one server), but not the setup
// of a new connection (HELLO, CLIENT SETINFO, AUTH, SELECT). Add it to every
// client a driver uses, with one counter per driver.
type RoundTripHook struct{ N *atomic.Int64 }

func connSetup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

// DialHook passes dials through uncounted.
func (RoundTripHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook counts a command.
func (h RoundTripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !connSetup(cmd) {
			h.N.Add(1)
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook counts a pipeline once.
func (h RoundTripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !connSetup(cmds[0]) {
			h.N.Add(1)
		}
		return next(ctx, cmds)
	}
}
