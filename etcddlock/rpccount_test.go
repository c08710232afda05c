package etcddlock

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/internal/testserver"
)

// rpcCounter counts the client's gRPC calls by method: unary calls,
// streams opened and messages sent on streams.
type rpcCounter struct {
	mu      sync.Mutex
	unary   map[string]int
	streams map[string]int
	sent    atomic.Int64 // messages sent on streams
}

// countedClient opens a dlock Client over a clientv3 client of srv whose
// calls and stream messages counter counts; both close when the test ends.
func countedClient(t *testing.T, srv *testserver.Etcd) (*dlock.Client, *rpcCounter) {
	t.Helper()
	counter := newRPCCounter()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   srv.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: counter.dialOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	c, err := NewClient(cli, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, counter
}

func newRPCCounter() *rpcCounter {
	return &rpcCounter{unary: map[string]int{}, streams: map[string]int{}}
}

func (c *rpcCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.mu.Lock()
			c.unary[method]++
			c.mu.Unlock()
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			c.mu.Lock()
			c.streams[method]++
			c.mu.Unlock()
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &countingStream{ClientStream: s, sent: &c.sent}, nil
		}),
	}
}

// snapshot returns the number of unary calls plus streams opened, and
// stream messages sent, so far.
func (c *rpcCounter) snapshot() (calls int, msgs int64, byMethod map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byMethod = map[string]int{}
	for m, n := range c.unary {
		calls += n
		byMethod[m[strings.LastIndex(m, "/")+1:]] += n
	}
	for m, n := range c.streams {
		calls += n
		byMethod[m[strings.LastIndex(m, "/")+1:]+"(stream)"] += n
	}
	return calls, c.sent.Load(), byMethod
}

type countingStream struct {
	grpc.ClientStream
	sent *atomic.Int64
}

func (s *countingStream) SendMsg(m any) error {
	s.sent.Add(1)
	return s.ClientStream.SendMsg(m)
}

func diff(after, before map[string]int) map[string]int {
	d := map[string]int{}
	for m, n := range after {
		if n != before[m] {
			d[m] = n - before[m]
		}
	}
	return d
}

// parallel runs f(0..n-1) on workers goroutines and fails the test on the
// first error.
func parallel(t *testing.T, n, workers int, f func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = fmt.Errorf("item %d: %w", i, err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}
