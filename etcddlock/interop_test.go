package etcddlock

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// TestInterop checks that, with an empty prefix, a dlock lock on K is the
// same lock as concurrency.NewMutex(session, K) and `etcdctl lock K`, in
// both directions, sharing one FIFO queue.
func TestInterop(t *testing.T) {
	srv := testserver.StartEtcd(t)
	url := "etcd://" + srv.Addr() + "?prefix="
	raw := rawClient(t, srv.Endpoints())
	t.Run("MutexExcludesDlock", func(t *testing.T) {
		ctx := testCtx(t, 20*time.Second)
		c := openClient(t, url)
		key := "interop/mutex-first"
		m := concurrency.NewMutex(newSession(t, raw), key)
		if err := m.TryLock(ctx); err != nil {
			t.Fatalf("Mutex.TryLock: %v", err)
		}
		if _, err := c.TryLock(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("dlock TryLock while the Mutex holds = %v, want ErrNotAcquired", err)
		}
		in, err := c.Inspect(ctx, key)
		if err != nil || !in.Held || in.Fence != uint64(m.Header().Revision) {
			t.Fatalf("Inspect = %+v, %v; want held by the Mutex (fence %d)", in, err, m.Header().Revision)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		l, err := c.TryLock(ctx, key)
		if err != nil {
			t.Fatalf("dlock TryLock after the Mutex unlocked: %v", err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("DlockExcludesMutex", func(t *testing.T) {
		ctx := testCtx(t, 20*time.Second)
		c := openClient(t, url)
		key := "interop/dlock-first"
		l, err := c.TryLock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		m := concurrency.NewMutex(newSession(t, raw), key)
		if err := m.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
			t.Fatalf("Mutex.TryLock while dlock holds = %v, want ErrLocked", err)
		}
		locked := make(chan error, 1)
		go func() { locked <- m.Lock(ctx) }()
		select {
		case err := <-locked:
			t.Fatalf("Mutex.Lock returned while dlock holds: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-locked:
			if err != nil {
				t.Fatalf("Mutex.Lock: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Mutex.Lock not granted 5s after dlock unlocked")
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
	for _, mutexFirst := range []bool{true, false} {
		name := "FIFO/MutexQueuedFirst"
		if !mutexFirst {
			name = "FIFO/DlockQueuedFirst"
		}
		t.Run(name, func(t *testing.T) { testMixedFIFO(t, url, raw, mutexFirst) })
	}
	t.Run("Etcdctl", func(t *testing.T) { testEtcdctl(t, url, srv.Addr()) })
}

func newSession(t *testing.T, cli *clientv3.Client) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// testMixedFIFO queues a Mutex waiter and a dlock waiter behind a dlock
// holder, in the given order, and checks they are granted in that order.
func testMixedFIFO(t *testing.T, url string, raw *clientv3.Client, mutexFirst bool) {
	ctx := testCtx(t, 30*time.Second)
	key := "interop/fifo-" + map[bool]string{true: "m", false: "d"}[mutexFirst]
	holder, waiter := openClient(t, url), openClient(t, url)
	hl, err := holder.TryLock(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 2)
	startMutex := func() {
		m := concurrency.NewMutex(newSession(t, raw), key)
		go func() {
			if err := m.Lock(ctx); err != nil {
				t.Errorf("Mutex.Lock: %v", err)
				order <- "mutex-failed"
				return
			}
			order <- "mutex"
			time.Sleep(20 * time.Millisecond)
			_ = m.Unlock(ctx)
		}()
	}
	startDlock := func() {
		go func() {
			l, err := waiter.Lock(ctx, key)
			if err != nil {
				t.Errorf("dlock Lock: %v", err)
				order <- "dlock-failed"
				return
			}
			order <- "dlock"
			time.Sleep(20 * time.Millisecond)
			_ = l.Unlock(ctx)
		}()
	}
	want := []string{"dlock", "mutex"}
	if mutexFirst {
		want = []string{"mutex", "dlock"}
		startMutex()
		waitWaiters(t, holder, key, 1)
		startDlock()
	} else {
		startDlock()
		waitWaiters(t, holder, key, 1)
		startMutex()
	}
	waitWaiters(t, holder, key, 2)
	if err := hl.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		select {
		case got := <-order:
			if got != w {
				t.Fatalf("grant %d went to %s, want %s", i, got, w)
			}
		case <-ctx.Done():
			t.Fatalf("grant %d: %v", i, ctx.Err())
		}
	}
}

// etcdctlLock runs `etcdctl lock key` and returns once it holds the lock
// (it prints the lock's key), or fails the test. stop sends SIGTERM, upon
// which etcdctl unlocks and exits.
type etcdctlLock struct {
	cmd     *exec.Cmd
	printed chan string
	exited  chan error
}

func startEtcdctlLock(t *testing.T, addr, key string) *etcdctlLock {
	t.Helper()
	return startEtcdctl(t, addr, "lock", key)
}

// startEtcdctl runs `etcdctl args...` (lock, elect), whose first line of
// output says it holds what it asked for.
func startEtcdctl(t *testing.T, addr string, args ...string) *etcdctlLock {
	t.Helper()
	bin := testserver.LookPath(t, "etcdctl", "etcd-client")
	cmd := exec.Command(bin, append([]string{"--endpoints=" + addr}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcdctl: %v", err)
	}
	e := &etcdctlLock{cmd: cmd, printed: make(chan string, 1), exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			e.printed <- sc.Text()
		}
		for sc.Scan() {
		}
		err := cmd.Wait()
		if err != nil {
			err = errors.Join(err, errors.New(stderr.String()))
		}
		e.exited <- err
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	return e
}

func (e *etcdctlLock) stop(t *testing.T) {
	t.Helper()
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-e.exited:
		if err != nil {
			t.Fatalf("etcdctl lock: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("etcdctl lock did not exit 10s after SIGTERM")
	}
}

func testEtcdctl(t *testing.T, url, addr string) {
	ctx := testCtx(t, 60*time.Second)
	c := openClient(t, url)

	// etcdctl holds: dlock cannot take the key.
	key := "interop/etcdctl-first"
	e := startEtcdctlLock(t, addr, key)
	select {
	case line := <-e.printed:
		if !strings.HasPrefix(line, key+"/") {
			t.Fatalf("etcdctl printed %q, want the lock key %q/<lease>", line, key)
		}
	case err := <-e.exited:
		t.Fatalf("etcdctl lock exited: %v", err)
	case <-ctx.Done():
		t.Fatal("etcdctl lock did not acquire")
	}
	if _, err := c.TryLock(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("dlock TryLock while etcdctl holds = %v, want ErrNotAcquired", err)
	}
	e.stop(t)
	l, err := c.TryLock(ctx, key)
	if err != nil {
		t.Fatalf("dlock TryLock after etcdctl unlocked: %v", err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// dlock holds: etcdctl waits until dlock unlocks.
	key = "interop/dlock-before-etcdctl"
	l, err = c.TryLock(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	e = startEtcdctlLock(t, addr, key)
	select {
	case line := <-e.printed:
		t.Fatalf("etcdctl acquired (%q) while dlock holds the key", line)
	case err := <-e.exited:
		t.Fatalf("etcdctl lock exited: %v", err)
	case <-time.After(time.Second):
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.printed:
	case err := <-e.exited:
		t.Fatalf("etcdctl lock exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("etcdctl did not acquire within 10s of dlock's unlock")
	}
	if _, err := c.TryLock(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("dlock TryLock while etcdctl holds = %v, want ErrNotAcquired", err)
	}
	e.stop(t)
}
