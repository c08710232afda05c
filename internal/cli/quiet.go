package cli

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// quietLibraries stops client libraries from logging on dlock's stderr,
// where every problem is reported as one "dlock: ..." line instead.
func quietLibraries() {
	redis.SetLogger(discardLogger{})
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}
