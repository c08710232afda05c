package bench

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/dlock-go/dlock/internal/testserver"
)

// The servers come from the project's test helper (internal/testserver),
// which takes a testing.TB. serverT is the small part of testing.TB that the
// helper uses, outside of a test: Fatalf and Skip end the start-up of one
// backend (recovered in startBackend), Cleanup registers the stop of a
// server for the end of the run, TempDir makes a directory removed then.

type serverT struct {
	testing.TB // never called: every method the helper uses is below

	mu       sync.Mutex
	cleanups []func()
	name     string
}

// abort is what Fatalf and Skip panic with; startBackend recovers it.
type abort struct {
	skip bool
	msg  string
}

func newServerT(name string) *serverT { return &serverT{name: name} }

func (t *serverT) Helper()      {}
func (t *serverT) Name() string { return t.name }

func (t *serverT) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *serverT) TempDir() string {
	dir, err := os.MkdirTemp("", "dlockbench-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func (t *serverT) Logf(format string, args ...any) {}
func (t *serverT) Log(args ...any)                 {}
func (t *serverT) Errorf(format string, args ...any) {
	panic(abort{msg: fmt.Sprintf(format, args...)})
}
func (t *serverT) Fatalf(format string, args ...any) {
	panic(abort{msg: fmt.Sprintf(format, args...)})
}
func (t *serverT) Fatal(args ...any) { panic(abort{msg: fmt.Sprint(args...)}) }
func (t *serverT) Skip(args ...any)  { panic(abort{skip: true, msg: fmt.Sprint(args...)}) }
func (t *serverT) Skipf(format string, args ...any) {
	panic(abort{skip: true, msg: fmt.Sprintf(format, args...)})
}

// close stops every server started through t, the last started first.
func (t *serverT) close() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// errSkipped marks a backend whose server binary is missing.
var errSkipped = errors.New("server not installed")

// startBackend runs start with t, turning the helper's Fatalf into an error
// and its Skip into an error matching errSkipped.
func startBackend(t *serverT, start func(t *serverT)) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		a, ok := r.(abort)
		if !ok {
			panic(r)
		}
		if a.skip {
			err = fmt.Errorf("%w: %s", errSkipped, a.msg)
			return
		}
		err = errors.New(a.msg)
	}()
	start(t)
	return nil
}

// requireServers reports whether a missing server is an error rather than a
// skip (DLOCK_TEST_REQUIRE_SERVERS=1, as in `make test`).
func requireServers() bool { return testserver.Required() }
