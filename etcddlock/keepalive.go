package etcddlock

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// keepAliver sends lease keep-alives over a few long-lived LeaseKeepAlive
// streams per driver (kaLanes), instead of a new stream per keep-alive
// (what clientv3's KeepAliveOnce does). Many keep-alives are written to the
// stream back to back and answered in one go, so renewing the leases of a
// batch of locks costs about one round trip, not one each.
//
// etcd answers each request on the stream with the lease's new TTL, or a
// TTL of 0 when it no longer knows the lease. Requests for one lease are
// answered in the order they were sent; responses are matched to requests
// by lease ID and that order. A stream that fails (the member went away,
// lost its leader, did not answer within the request timeout) fails every
// request waiting on it; the next keep-alive opens a new one.
//
// etcd handles the requests of one stream one after the other, and a
// keep-alive for a lease that has expired but is not yet revoked waits
// there until the revocation is done, which etcd rate-limits. So that one
// such request cannot hold up the keep-alives of every other lock (and let
// them expire too), no keep-alive is sent for a lease not confirmed within
// its TTL (its lock's validity is over anyway), and a stream with requests
// waiting that answers nothing for stallAfter is given up: its requests
// fail, and later ones go to a new stream.
type keepAliver struct {
	d *etcdDriver

	next atomic.Uint64 // round robin over the lanes

	mu    sync.Mutex
	lanes [kaLanes]*kaStream
}

// kaStream is one LeaseKeepAlive stream and the requests waiting on it.
type kaStream struct {
	stream pb.Lease_LeaseKeepAliveClient
	ctx    context.Context
	cancel context.CancelCauseFunc // ends the stream, saying why

	sendMu sync.Mutex // one sender at a time; held from registration to send

	mu       sync.Mutex
	pending  map[int64][]kaSlot
	waiting  int       // requests not yet answered
	progress time.Time // last answer, or when requests began to wait
	err      error     // why the stream ended; set once
}

var (
	errStalled  = errors.New("keep-alive stream stalled: no answer for " + stallAfter.String())
	errNoAnswer = errors.New("keep-alive stream stuck: no answer within the request timeout")
	errRetired  = errors.New("keep-alive stream ended")
)

// stallAfter is how long a stream with requests waiting may go without
// answering any before it is given up. A healthy member answers a
// keep-alive in well under a millisecond.
const stallAfter = 500 * time.Millisecond

// kaSlot is where the answer to one request goes.
type kaSlot struct {
	b *kaBatch
	i int
}

// kaBatch collects the answers to the requests of one keepAlive call.
type kaBatch struct {
	ttl  []int64
	err  []error
	left int
	done chan struct{}
}

// set records the answer for request i; called with the stream's mu held.
func (b *kaBatch) set(i int, ttl int64, err error) {
	b.ttl[i], b.err[i] = ttl, err
	b.left--
	if b.left == 0 {
		close(b.done)
	}
}

// kaLanes is the number of keep-alive streams a driver keeps open. etcd
// handles the requests of one stream one after the other; a large batch is
// spread over the streams so that the server works on them in parallel.
const kaLanes = 4

// kaMinPerLane is the smallest share of a batch worth a stream of its own.
const kaMinPerLane = 128

// keepAlive renews every lease in ls and returns one result per lease: nil
// (the lease is confirmed from the send time), errLeaseGone (the server no
// longer knows it; it is marked lost) or the transport error, not yet
// wrapped. It returns when all are answered, the request timeout passes or
// ctx ends.
func (k *keepAliver) keepAlive(ctx context.Context, ls []*lease) []error {
	errs := make([]error, len(ls))
	ids := make([]int64, 0, len(ls))
	idx := make([]int, 0, len(ls))
	for i, l := range ls {
		if l.isLost() {
			errs[i] = errLeaseGone
			continue
		}
		if time.Since(l.confirmedAt()) >= time.Duration(l.sec)*time.Second {
			// It may have expired on the server, where a keep-alive
			// would wait for its revocation. Nothing it backs is valid
			// any more: give it up.
			k.d.revokeAsync(l)
			errs[i] = errLeaseGone
			continue
		}
		ids = append(ids, int64(l.id))
		idx = append(idx, i)
	}
	if len(ids) == 0 {
		return errs
	}
	rctx, cancel := k.d.rpcCtx(ctx)
	defer cancel()
	lanes := min(kaLanes, (len(ids)+kaMinPerLane-1)/kaMinPerLane)
	first := int(k.next.Add(1))
	type part struct {
		s     *kaStream
		b     *kaBatch
		err   error
		start int
	}
	parts := make([]part, lanes)
	sent := time.Now()
	for p := range parts {
		lo, hi := p*len(ids)/lanes, (p+1)*len(ids)/lanes
		parts[p].start = lo
		parts[p].s, parts[p].b, parts[p].err = k.send(rctx, (first+p)%kaLanes, ids[lo:hi])
	}
	for p := range parts {
		pt := &parts[p]
		if pt.err != nil {
			continue
		}
		select {
		case <-pt.b.done:
		case <-rctx.Done():
			if ctx.Err() == nil {
				// No answer within the request timeout: the stream is
				// stuck. End it, so that the next keep-alive opens a
				// new one.
				k.retire(pt.s, errNoAnswer)
			}
			pt.err = rctx.Err()
		}
	}
	for p, pt := range parts {
		hi := len(ids)
		if p+1 < len(parts) {
			hi = parts[p+1].start
		}
		for j := pt.start; j < hi; j++ {
			i := idx[j]
			switch {
			case pt.err != nil:
				errs[i] = pt.err
			case pt.b.err[j-pt.start] != nil:
				errs[i] = pt.b.err[j-pt.start]
			case pt.b.ttl[j-pt.start] <= 0:
				ls[i].markLost()
				errs[i] = errLeaseGone
			default:
				ls[i].confirm(sent)
			}
		}
	}
	return errs
}

// send sends keep-alives for ids on the given lane's stream, opening one
// if needed. A stream found retired before the requests were registered is
// replaced once.
func (k *keepAliver) send(ctx context.Context, lane int, ids []int64) (*kaStream, *kaBatch, error) {
	for attempt := 0; ; attempt++ {
		s, err := k.stream(ctx, lane)
		if err != nil {
			return nil, nil, err
		}
		b, err := s.send(ids)
		if err == nil || attempt > 0 {
			return s, b, err
		}
		k.retire(s, nil)
	}
}

// stream returns the lane's keep-alive stream, opening one if there is
// none. Opening is bounded by ctx; the stream itself lives until it fails,
// is given up, or the driver is closed.
func (k *keepAliver) stream(ctx context.Context, lane int) (*kaStream, error) {
	k.mu.Lock()
	s := k.lanes[lane]
	k.mu.Unlock()
	if s != nil {
		return s, nil
	}
	conn := k.d.cli.ActiveConnection()
	if conn == nil {
		return nil, errors.New("no connection")
	}
	// WithRequireLeader: a member that has lost its leader ends the
	// stream instead of leaving keep-alives unanswered.
	sctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(k.d.ctx))
	stop := context.AfterFunc(ctx, func() { cancel(ctx.Err()) })
	st, err := pb.NewLeaseClient(conn).LeaseKeepAlive(sctx, grpc.WaitForReady(true))
	if !stop() {
		// ctx ended while the stream was being opened.
		cancel(nil)
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	s = &kaStream{stream: st, ctx: sctx, cancel: cancel, pending: map[int64][]kaSlot{}, progress: time.Now()}
	k.mu.Lock()
	if other := k.lanes[lane]; other != nil {
		// Another call opened one meanwhile: use that.
		k.mu.Unlock()
		cancel(nil)
		return other, nil
	}
	k.lanes[lane] = s
	k.mu.Unlock()
	go s.receive(k)
	go s.watch(k)
	return s, nil
}

// retire ends s, if it is not ended yet, and takes it out of its lane, so
// that later keep-alives go to a new stream.
func (k *keepAliver) retire(s *kaStream, cause error) {
	s.cancel(cause)
	k.mu.Lock()
	for i, cur := range k.lanes {
		if cur == s {
			k.lanes[i] = nil
		}
	}
	k.mu.Unlock()
}

// send registers a request for each lease ID and writes them to the stream.
func (s *kaStream) send(ids []int64) (*kaBatch, error) {
	b := &kaBatch{ttl: make([]int64, len(ids)), err: make([]error, len(ids)), left: len(ids), done: make(chan struct{})}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.err != nil || s.ctx.Err() != nil {
		s.mu.Unlock()
		return nil, errRetired
	}
	if s.waiting == 0 {
		s.progress = time.Now()
	}
	for i, id := range ids {
		s.pending[id] = append(s.pending[id], kaSlot{b, i})
	}
	s.waiting += len(ids)
	s.mu.Unlock()
	req := &pb.LeaseKeepAliveRequest{}
	for _, id := range ids {
		req.ID = id
		if err := s.stream.Send(req); err != nil {
			// The stream is broken; Recv says why, to every request
			// waiting on it, these included.
			s.cancel(nil)
			break
		}
	}
	return b, nil
}

// receive delivers the stream's answers until it fails, then fails every
// request still waiting and retires the stream.
func (s *kaStream) receive(k *keepAliver) {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.end(k, err)
			return
		}
		s.mu.Lock()
		s.progress = time.Now()
		if q := s.pending[resp.ID]; len(q) > 0 {
			s.waiting--
			q[0].b.set(q[0].i, resp.TTL, nil)
			if len(q) == 1 {
				delete(s.pending, resp.ID)
			} else {
				q[0] = kaSlot{}
				s.pending[resp.ID] = q[1:]
			}
		}
		s.mu.Unlock()
	}
}

func (s *kaStream) end(k *keepAliver, err error) {
	if cause := context.Cause(s.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause // ended by us: say why
	}
	k.retire(s, nil)
	s.mu.Lock()
	s.err = err
	for _, q := range s.pending {
		for _, slot := range q {
			slot.b.set(slot.i, 0, err)
		}
	}
	s.pending = nil
	s.waiting = 0
	s.mu.Unlock()
}

// watch gives the stream up when it has requests waiting and has answered
// none for stallAfter.
func (s *kaStream) watch(k *keepAliver) {
	t := time.NewTicker(stallAfter / 4)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		stalled := s.waiting > 0 && time.Since(s.progress) > stallAfter
		s.mu.Unlock()
		if stalled {
			k.retire(s, errStalled)
			return
		}
	}
}
