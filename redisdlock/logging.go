package redisdlock

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RouteGoRedisLogs sets go-redis's process-wide logger (redis.SetLogger)
// to one that turns every line go-redis prints into a record of l at level
// Warn, with the line as the message and the attribute
// component=go-redis, logged with the context of the go-redis call that
// printed it (so a context-aware slog.Handler can tell which request
// caused it). A nil l discards go-redis's lines.
//
// It changes state shared by the whole process: it affects every go-redis
// client, dlock's or not, until something calls redis.SetLogger again. dlock
// never calls it on its own; an application that wants go-redis's lines
// (see docs/redis.md for which ones dlock's use can cause) in its slog
// output instead of on stderr calls it once, at start. An application that
// already sets go-redis's logger does not need it.
func RouteGoRedisLogs(l *slog.Logger) {
	redis.SetLogger(goRedisLogger{l})
}

// goRedisLogger implements go-redis's logging interface over slog.
type goRedisLogger struct{ l *slog.Logger }

func (g goRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	if g.l == nil {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if !g.l.Enabled(ctx, slog.LevelWarn) {
		return
	}
	g.l.Log(ctx, slog.LevelWarn, strings.TrimSuffix(fmt.Sprintf(format, v...), "\n"), slog.String("component", "go-redis"))
}
