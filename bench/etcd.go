package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/dlock-go/dlock"
	_ "github.com/dlock-go/dlock/etcddlock" // etcd://
	"github.com/dlock-go/dlock/internal/testserver"
)

// etcdServer is one etcd member.
type etcdServer struct {
	srv *testserver.Etcd
}

func (e *etcdServer) client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   e.srv.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// counts sums grpc_server_msg_received_total from the member's metrics:
// every unary request and every message on a stream (watch requests, lease
// keep-alives).
func (e *etcdServer) counts(ctx context.Context) (counts, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.srv.Endpoints()[0]+"/metrics", nil)
	if err != nil {
		return counts{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return counts{}, fmt.Errorf("etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_msg_received_total{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			total += v
		}
	}
	if err := sc.Err(); err != nil {
		return counts{}, fmt.Errorf("etcd metrics: %w", err)
	}
	return counts{server: int64(total), roundTrips: -1}, nil
}

func (e *etcdServer) version(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.srv.Endpoints()[0]+"/version", nil)
	if err != nil {
		return "?"
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	var v struct {
		Server string `json:"etcdserver"`
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return "?"
	}
	return v.Server
}

func newEtcdBackend(ctx context.Context, t *serverT) (*backend, error) {
	e := &etcdServer{}
	if err := startBackend(t, func(t *serverT) { e.srv = testserver.StartEtcd(t) }); err != nil {
		return nil, err
	}
	b := &backend{
		name:       "etcd",
		title:      "etcd, one member",
		version:    "etcd " + e.version(ctx),
		serverUnit: "etcd gRPC requests and stream messages (grpc_server_msg_received_total)",
		counter:    e.counts,
	}
	open := func() (*dlock.Client, func(), error) {
		c, err := dlock.Open(ctx, "etcd://"+e.srv.Addr())
		if err != nil {
			return nil, nil, err
		}
		return c, func() { _ = c.Close() }, nil
	}
	b.subjects = []*subject{
		{id: "dlock", backend: "etcd", name: "dlock", setting: "defaults", role: roleDlock, uncontended: true, hotKey: true,
			contenders: dlockContenders(open), hold: dlockHold(open)},
		{id: "dlock-shared", backend: "etcd", name: "dlock, one Client", setting: "defaults", role: roleDlock, hotKey: true,
			contenders: sharedDlockContenders(open)},
		{id: "mutex", backend: "etcd", name: "concurrency.Mutex", setting: "defaults: a Session (60 s lease) per client; it queues, no retry setting", role: rolePeer, uncontended: true, hotKey: true,
			contenders: e.mutexContenders, hold: e.mutexHold},
		{id: "floor", backend: "etcd", name: "raw floor", setting: "Txn put-if-absent on a granted lease + Delete", role: roleFloor, uncontended: true,
			contenders: e.floorContenders},
	}
	b.family = &family{open: open, slots: e.mutexSlots, slotsName: "concurrency.Mutex TryLock"}
	return b, nil
}

// mutexSlots are the hand-written semaphore's slots as concurrency.Mutex
// prefixes on one Session per contender, taken with TryLock.
func (e *etcdServer) mutexSlots(ctx context.Context, key string, limit, n int) ([]tryFunc, func(), error) {
	return openN(n, func(int) (tryFunc, func(), error) {
		cli, err := e.client()
		if err != nil {
			return nil, nil, err
		}
		sess, err := concurrency.NewSession(cli, concurrency.WithContext(ctx))
		if err != nil {
			_ = cli.Close()
			return nil, nil, err
		}
		ms := make([]*concurrency.Mutex, limit)
		for i := range ms {
			ms[i] = concurrency.NewMutex(sess, fmt.Sprintf("/bench-slots/%s/%d", key, i))
		}
		try := func(ctx context.Context, i int) (func(context.Context) error, bool, error) {
			m := ms[i]
			if err := m.TryLock(ctx); err != nil {
				if errors.Is(err, concurrency.ErrLocked) {
					return nil, false, nil
				}
				return nil, false, err
			}
			return m.Unlock, true, nil
		}
		return try, func() { _ = sess.Close(); _ = cli.Close() }, nil
	})
}

func (e *etcdServer) mutexContenders(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
	return openN(n, func(int) (lockFunc, func(), error) {
		cli, err := e.client()
		if err != nil {
			return nil, nil, err
		}
		sess, err := concurrency.NewSession(cli, concurrency.WithContext(ctx))
		if err != nil {
			_ = cli.Close()
			return nil, nil, err
		}
		m := concurrency.NewMutex(sess, "/bench-mutex/"+key)
		lock := func(ctx context.Context) (func(context.Context) error, error) {
			if err := m.Lock(ctx); err != nil {
				return nil, err
			}
			return m.Unlock, nil
		}
		return lock, func() { _ = sess.Close(); _ = cli.Close() }, nil
	})
}

// mutexHold takes every key with a concurrency.Mutex on one Session whose
// lease has the TTL: the Session's one keep-alive stream keeps them all.
func (e *etcdServer) mutexHold(ctx context.Context, keys []string, ttl time.Duration) (heldSet, error) {
	cli, err := e.client()
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(int(max(ttl/time.Second, 1))))
	if err != nil {
		_ = cli.Close()
		return nil, err
	}
	h := &sessionHeld{done: sess.Done(), close: func() { _ = sess.Close(); _ = cli.Close() }}
	ms := make([]*concurrency.Mutex, len(keys))
	err = parallel(len(keys), holdWorkers, func(i int) error {
		m := concurrency.NewMutex(sess, "/bench-mutex/"+keys[i])
		if err := m.Lock(ctx); err != nil {
			return err
		}
		ms[i] = m
		return nil
	})
	for _, m := range ms {
		if m != nil {
			h.releases = append(h.releases, m.Unlock)
		}
	}
	if err != nil {
		_ = h.release(ctx)
		return nil, err
	}
	return h, nil
}

// sessionHeld is a set of locks that live as long as one session does
// (etcd's Session lease, a ZooKeeper session).
type sessionHeld struct {
	done     <-chan struct{} // closed when the session ends; nil: never known
	releases []func(context.Context) error
	close    func()
}

func (h *sessionHeld) lost() int {
	if h.done == nil {
		return 0
	}
	select {
	case <-h.done:
		return len(h.releases)
	default:
		return 0
	}
}

func (h *sessionHeld) release(ctx context.Context) error {
	var first firstErr
	_ = parallel(len(h.releases), holdWorkers, func(i int) error {
		first.set(h.releases[i](ctx))
		return nil
	})
	h.close()
	return first.get()
}

// floorContenders: one transaction that puts the key with a lease when it
// has no create revision (what a lock needs at least, the lease granted
// once per client as a session does), and a delete.
func (e *etcdServer) floorContenders(ctx context.Context, key string, n int) ([]lockFunc, func(), error) {
	return openN(n, func(int) (lockFunc, func(), error) {
		cli, err := e.client()
		if err != nil {
			return nil, nil, err
		}
		lease, err := cli.Grant(ctx, 60)
		if err != nil {
			_ = cli.Close()
			return nil, nil, err
		}
		k := "/bench-floor/" + key
		lock := func(ctx context.Context) (func(context.Context) error, error) {
			resp, err := cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
				Then(clientv3.OpPut(k, "", clientv3.WithLease(lease.ID))).
				Commit()
			if err != nil {
				return nil, err
			}
			if !resp.Succeeded {
				return nil, errors.New("etcd floor: key held")
			}
			return func(ctx context.Context) error {
				_, err := cli.Delete(ctx, k)
				return err
			}, nil
		}
		return lock, func() { _ = cli.Close() }, nil
	})
}
