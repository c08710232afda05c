//go:build linux

package redisdlock_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9/logging"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
	"github.com/dlock-go/dlock/redisdlock"
)

// captureStderr runs fn with file descriptor 2 pointed at a pipe (go-redis's
// default logger writes to the stderr file it found at start, so replacing
// os.Stderr would not catch it) and returns what was written.
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	func() {
		defer func() {
			_ = syscall.Dup3(saved, 2, 0)
			_ = syscall.Close(saved)
			_ = w.Close()
		}()
		fn()
	}()
	select {
	case s := <-out:
		_ = r.Close()
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("stderr pipe not drained")
		return ""
	}
}

// recordHandler keeps the records logged through it.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// TestGoRedisLogs: a dlock call that cannot dial its server makes go-redis
// print "failed to dial" to the process's stderr through go-redis's
// process-wide default logger (as docs/redis.md says); after
// RouteGoRedisLogs(l) the same line is a Warn record of l and nothing
// reaches stderr, and after RouteGoRedisLogs(nil) it is dropped. The test
// restores go-redis's default logger (what the process started with).
func TestGoRedisLogs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nobody listens there now: dials are refused
	t.Cleanup(logging.Enable)

	dialFails := func(t *testing.T) {
		t.Helper()
		ctx := testCtx(t, 30*time.Second)
		c, err := dlock.Open(ctx, "redis://"+addr+"/0")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer c.Close()
		if _, err := c.TryLock(ctx, "k"); err == nil {
			t.Fatal("TryLock against a closed port succeeded")
		}
	}
	tests := []struct {
		name       string
		setup      func(h *recordHandler)
		wantStderr bool // a "failed to dial" line on stderr
		wantRecord bool // the line as a slog record
	}{
		{"go-redis default logger", func(*recordHandler) { logging.Enable() }, true, false},
		{"RouteGoRedisLogs", func(h *recordHandler) { redisdlock.RouteGoRedisLogs(slog.New(h)) }, false, true},
		{"RouteGoRedisLogs(nil)", func(*recordHandler) { redisdlock.RouteGoRedisLogs(nil) }, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &recordHandler{}
			tc.setup(h)
			stderr := captureStderr(t, func() { dialFails(t) })
			logging.Enable()
			if got := strings.Contains(stderr, "failed to dial"); got != tc.wantStderr {
				t.Errorf("stderr has a \"failed to dial\" line: %v, want %v; stderr:\n%s", got, tc.wantStderr, stderr)
			}
			if !tc.wantStderr && strings.Contains(stderr, "redis: ") {
				t.Errorf("stderr has go-redis output:\n%s", stderr)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			var found bool
			for _, r := range h.records {
				if !strings.Contains(r.Message, "failed to dial") {
					continue
				}
				found = true
				if r.Level != slog.LevelWarn {
					t.Errorf("record level = %v, want WARN", r.Level)
				}
				var comp string
				r.Attrs(func(a slog.Attr) bool {
					if a.Key == "component" {
						comp = a.Value.String()
					}
					return true
				})
				if comp != "go-redis" {
					t.Errorf("record component = %q, want go-redis", comp)
				}
			}
			if found != tc.wantRecord {
				t.Errorf("a \"failed to dial\" slog record: %v, want %v (records %d)", found, tc.wantRecord, len(h.records))
			}
		})
	}
}

// TestLogsCarryNoPassword: a client whose URL has a password logs its
// locks' lives, a refresh that fails and the lock's loss once the server
// is gone (dlock's lines and go-redis's, routed to the same logger), with
// the backend and the errors, never the password; a wrong password fails
// without showing it.
func TestLogsCarryNoPassword(t *testing.T) {
	const pw = "right-pw-7d1c"
	srv := testserver.StartRedis(t, testserver.RedisPassword(pw))
	var out bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	redisdlock.RouteGoRedisLogs(logger)
	t.Cleanup(logging.Enable)
	ctx := testCtx(t, 30*time.Second)
	wrong := openURL(t, "redis://:wrong-"+pw+"@"+srv.Addr(), dlock.WithLogger(logger))
	if _, err := wrong.TryLock(ctx, "k"); err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("TryLock with a wrong password = %v; want an error without the password", err)
	}
	c := openURL(t, "redis://:"+pw+"@"+srv.Addr(), dlock.WithLogger(logger))
	l, err := c.Lock(ctx, "k", dlock.WithTTL(time.Second))
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	srv.Kill()
	select {
	case <-l.Done():
	case <-ctx.Done():
		t.Fatal("the lock was not lost with its server gone")
	}
	if err := l.Err(); err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("the lost lock's Err = %v; want one without the password", err)
	}
	mu.Lock()
	text := out.String()
	mu.Unlock()
	if strings.Contains(text, pw) {
		t.Errorf("the log carries the password:\n%s", text)
	}
	for _, want := range []string{"dlock: acquired", "dlock: refresh failed", "dlock: lock lost", "backend=redis"} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %q:\n%s", want, text)
		}
	}
}

// writerFunc adapts a function to io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
