package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
	_ "github.com/dlock-go/dlock/zkdlock" // zk://
)

const zkSessionTimeout = 30 * time.Second

type zkServer struct {
	srv *testserver.ZooKeeper
	// readOverhead is what one srvr reading adds to Received; readings
	// counts them.
	readOverhead int64
	readings     atomic.Int64
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// connect opens a session and waits until it is established.
func (z *zkServer) connect(ctx context.Context) (*zk.Conn, error) {
	conn, events, err := zk.Connect(z.srv.Addrs(), zkSessionTimeout, zk.WithLogger(quietLogger{}), zk.WithLogInfo(false))
	if err != nil {
		return nil, err
	}
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				go func() { // keep the channel drained
					for range events {
					}
				}()
				return conn, nil
			}
		case <-ctx.Done():
			conn.Close()
			return nil, ctx.Err()
		}
	}
}

// received reads "Received:" from srvr: requests the server has received
// (pings included).
func (z *zkServer) received(ctx context.Context) (int64, error) {
	out, err := testserver.FourLetterWord(ctx, z.srv.Addrs()[0], "srvr")
	if err != nil {
		return 0, fmt.Errorf("zookeeper srvr: %w", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Received: "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("zookeeper srvr: no Received line in %q", out)
}

func (z *zkServer) counts(ctx context.Context) (counts, error) {
	n, err := z.received(ctx)
	if err != nil {
		return counts{}, err
	}
	k := z.readings.Add(1)
	return counts{server: n - k*z.readOverhead, roundTrips: -1}, nil
}

func (z *zkServer) version(ctx context.Context) string {
	out, err := testserver.FourLetterWord(ctx, z.srv.Addrs()[0], "srvr")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Zookeeper version: "); ok {
			v, _, _ = strings.Cut(v, "-")
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func newZooKeeperBackend(ctx context.Context, t *serverT) (*backend, error) {
	z := &zkServer{}
	if err := startBackend(t, func(t *serverT) { z.srv = testserver.StartZooKeeper(t, testserver.ZooKeeperConfig{}) }); err != nil {
		return nil, err
	}
	a, err := z.received(ctx)
	if err != nil {
		return nil, err
	}
	b2, err := z.received(ctx)
	if err != nil {
		return nil, err
	}
	z.readOverhead = b2 - a
	conn, err := z.connect(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{"/bench-floor", "/bench-zklock", "/bench-slots"} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			conn.Close()
			return nil, err
		}
	}
	conn.Close()
	b := &backend{
		name:       "zookeeper",
		title:      "ZooKeeper, standalone",
		version:    "ZooKeeper " + z.version(ctx),
		serverUnit: "ZooKeeper requests received (srvr), pings included",
		counter:    z.counts,
	}
	open := func() (*dlock.Client, func(), error) {
		c, err := dlock.Open(ctx, "zk://"+z.srv.Addr()+"/dlockbench?session_timeout="+zkSessionTimeout.String())
		if err != nil {
			return nil, nil, err
		}
		return c, func() { _ = c.Close() }, nil
	}
	b.subjects = []*subject{
		{id: "dlock", backend: "zookeeper", name: "dlock", setting: "defaults", role: roleDlock, uncontended: true, hotKey: true,
			contenders: dlockContenders(open), hold: dlockHold(open)},
		{id: "dlock-shared", backend: "zookeeper", name: "dlock, one Client", setting: "defaults", role: roleDlock, hotKey: true,
			contenders: sharedDlockContenders(open)},
		{id: "zklock", backend: "zookeeper", name: "zk.Lock", setting: "defaults: a session per client; it queues, no retry setting", role: rolePeer, uncontended: true, hotKey: true,
			contenders: z.lockContenders, hold: z.lockHold},
		{id: "floor", backend: "zookeeper", name: "raw floor", setting: "create ephemeral + delete", role: roleFloor, uncontended: true,
			contenders: z.floorContenders},
	}
	b.family = &family{open: open, slots: z.createSlots, slotsName: "create-ephemeral try"}
	return b, nil
}

// createSlots are the hand-written semaphore's slots as ephemeral nodes,
// one session per contender: zk.Lock has no TryLock, so a try is a Create
// that fails with ErrNodeExists while the slot is held, and the release a
// Delete.
func (z *zkServer) createSlots(ctx context.Context, key string, limit, n int) ([]tryFunc, func(), error) {
	return openN(n, func(int) (tryFunc, func(), error) {
		conn, err := z.connect(ctx)
		if err != nil {
			return nil, nil, err
		}
		acl := zk.WorldACL(zk.PermAll)
		try := func(_ context.Context, i int) (func(context.Context) error, bool, error) {
			path := fmt.Sprintf("/bench-slots/%s-%d", key, i)
			if _, err := conn.Create(path, nil, zk.FlagEphemeral, acl); err != nil {
				if errors.Is(err, zk.ErrNodeExists) {
					return nil, false, nil
				}
				return nil, false, err
			}
			return func(context.Context) error { return conn.Delete(path, -1) }, true, nil
		}
		return try, conn.Close, nil
	})
}

// lockContenders: go-zookeeper's zk.Lock, each contender on its own
// session. zk.Lock takes no context: a waiter waits until it is granted.
func (z *zkServer) lockContenders(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
	return openN(n, func(int) (lockFunc, func(), error) {
		conn, err := z.connect(ctx)
		if err != nil {
			return nil, nil, err
		}
		l := zk.NewLock(conn, "/bench-zklock/"+key, zk.WorldACL(zk.PermAll))
		lock := func(context.Context) (func(context.Context) error, error) {
			if err := l.Lock(); err != nil {
				return nil, err
			}
			return func(context.Context) error { return l.Unlock() }, nil
		}
		return lock, conn.Close, nil
	})
}

// lockHold takes every key with zk.Lock on one session, which keeps them
// all (its pings are the only traffic while they are held).
func (z *zkServer) lockHold(ctx context.Context, keys []string, _ time.Duration) (heldSet, error) {
	conn, err := z.connect(ctx)
	if err != nil {
		return nil, err
	}
	h := &sessionHeld{close: conn.Close}
	ls := make([]*zk.Lock, len(keys))
	err = parallel(len(keys), holdWorkers, func(i int) error {
		l := zk.NewLock(conn, "/bench-zklock/"+keys[i], zk.WorldACL(zk.PermAll))
		if err := l.Lock(); err != nil {
			return err
		}
		ls[i] = l
		return nil
	})
	for _, l := range ls {
		if l != nil {
			h.releases = append(h.releases, func(context.Context) error { return l.Unlock() })
		}
	}
	if err != nil {
		_ = h.release(ctx)
		return nil, err
	}
	return h, nil
}

func (z *zkServer) floorContenders(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
	return openN(n, func(int) (lockFunc, func(), error) {
		conn, err := z.connect(ctx)
		if err != nil {
			return nil, nil, err
		}
		path := "/bench-floor/" + key
		acl := zk.WorldACL(zk.PermAll)
		lock := func(context.Context) (func(context.Context) error, error) {
			if _, err := conn.Create(path, nil, zk.FlagEphemeral, acl); err != nil {
				return nil, err
			}
			return func(context.Context) error { return conn.Delete(path, -1) }, nil
		}
		return lock, conn.Close, nil
	})
}
