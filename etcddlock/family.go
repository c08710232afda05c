package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-go/dlock/driver"
)

var _ driver.SharedLocker = (*etcdDriver)(nil)

// Shared grants (driver.SharedLocker): a semaphore's permits and an RW
// lock's readers.
//
// A shared grant of key K is an entry in K's queue Q, like a mutex entry,
// attached to a lease in the same way (the client's shared lease with
// auto-refresh), so that concurrency.Mutex and `etcdctl lock` see it as a
// holder and wait for it. Its name starts with Q + "/\xff": the byte 0xff
// is in no lease ID in hex (the names of mutex entries) and in no valid
// UTF-8 key, so with RawKeys no nested key's queue reaches into it, and
// every share sorts after every mutex entry in key order. The range
// [Q + "/", Q + "/\xff") holds the exclusive entries; [Q + "/\xff",
// Q + "0") the shares. After the mark comes the limit in decimal and ".":
//
//	Q/\xff<L>.<slot>                 a permit of a semaphore of L (L > 0),
//	                                 slot in [0, L)
//	Q/\xff0.<lease hex>.<seq hex>    a reader's share (no limit), unique
//
// So the limit is in every share's name, and a semaphore's key can never
// have more than L permits: there are only L slot names. The entry's value
// is the holder's metadata, as for a mutex entry; its create revision is
// the fence.
//
// One transaction grants a share: it puts the entry if no exclusive entry
// exists (none holds, none waits: writer preference), no share of another
// limit exists, and the entry's name is free; otherwise its Else branch
// reads what stood in the way, in the same revision. Since a share is
// granted only while the queue has no exclusive entry, every share
// precedes every exclusive entry in create revision order: an exclusive
// waiter (AcquireQueued) waits for the shares before it exactly as for a
// mutex holder, and no share can come after it.

// shareMark begins the name of a share, after the queue prefix and "/".
const shareMark = "\xff"

// Bounds of AcquireShared.
const (
	// shareAttempts bounds the transactions of one AcquireShared when the
	// permit slots it tried were taken meanwhile.
	shareAttempts = 4
	// shareScan bounds the permits whose slots a refused attempt reads.
	shareScan = 1024
	// ttlSample bounds the leases whose TTL a refused attempt reads for
	// its HolderTTL.
	ttlSample = 16
)

// shareRange is the range of Q's shares: [lo, hi).
func shareRange(pfx string) (lo, hi string) { return pfx + "/" + shareMark, pfx + "0" }

// limitPrefix is the prefix of the names of Q's shares of limit.
func limitPrefix(pfx string, limit int) string {
	return pfx + "/" + shareMark + strconv.Itoa(limit) + "."
}

// slotName is the name of a permit's entry.
func slotName(pfx string, limit, slot int) string {
	return limitPrefix(pfx, limit) + strconv.Itoa(slot)
}

// readerName is the name of a reader's entry, unique: the lease ID (which
// etcd does not hand out again) and a sequence number of the driver.
func readerName(pfx string, id clientv3.LeaseID, seq uint64) string {
	return fmt.Sprintf("%s%x.%x", limitPrefix(pfx, 0), int64(id), seq)
}

// shareSeg parses seg, the part of a share's name after the queue prefix
// and "/": the limit and, for a permit, its slot.
func shareSeg(seg string) (limit, slot int, ok bool) {
	rest, ok := strings.CutPrefix(seg, shareMark)
	if !ok {
		return 0, 0, false
	}
	ls, tail, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, 0, false
	}
	limit, err := strconv.Atoi(ls)
	if err != nil || limit < 0 || strconv.Itoa(limit) != ls {
		return 0, 0, false
	}
	if limit > 0 {
		if slot, err = strconv.Atoi(tail); err != nil || slot < 0 || slot >= limit {
			return 0, 0, false
		}
	}
	return limit, slot, true
}

// isShare reports whether the etcd key name is a share in queue pfx.
func isShare(pfx string, name []byte) bool {
	return strings.HasPrefix(string(name), pfx+"/"+shareMark)
}

// shareLimit is the limit in the name of a share of queue pfx.
func shareLimit(pfx string, name []byte) int {
	limit, _, _ := shareSeg(strings.TrimPrefix(string(name), pfx+"/"))
	return limit
}

// AcquireShared implements driver.SharedLocker. A token that already has a
// share of the key renews it (its metadata too), keeping its fence. A new
// share costs one transaction (and a lease grant when none can be reused);
// a permit whose slot was taken meanwhile tries a free one, up to
// shareAttempts transactions. A refused attempt also reads the TTL of the
// leases in the way, for HolderTTL.
func (d *etcdDriver) AcquireShared(ctx context.Context, req driver.SharedRequest) (driver.Result, error) {
	if err := d.check(ctx); err != nil {
		return driver.Result{}, err
	}
	if e := d.lookup(req.Key, req.Token); e != nil && e.share {
		if res, done, err := d.renewShare(ctx, req); done || err != nil {
			return res, err
		}
	}
	pfx := d.queuePrefix(req.Key)
	var taken map[int]bool
	for range shareAttempts {
		var nameOf func(clientv3.LeaseID) string
		if req.Limit > 0 {
			name := slotName(pfx, req.Limit, pickSlot(req.Limit, taken))
			nameOf = func(clientv3.LeaseID) string { return name }
		} else {
			seq := d.seq.Add(1)
			nameOf = func(id clientv3.LeaseID) string { return readerName(pfx, id, seq) }
		}
		res, retry, err := d.shareOnce(ctx, req, pfx, nameOf, &taken)
		if err != nil || !retry {
			return res, err
		}
	}
	// Others kept taking the free slots first.
	return driver.Result{}, nil
}

// pickSlot picks a permit slot of limit at random, one not in taken when
// there is one.
func pickSlot(limit int, taken map[int]bool) int {
	for range 64 {
		if s := rand.IntN(limit); !taken[s] {
			return s
		}
	}
	for s := range limit {
		if !taken[s] {
			return s
		}
	}
	return rand.IntN(limit)
}

// shareOnce makes one attempt at a share named nameOf(lease). retry
// reports that only the name was taken (a permit's slot) while the key has
// room: *taken is then the slots seen in use.
func (d *etcdDriver) shareOnce(ctx context.Context, req driver.SharedRequest, pfx string, nameOf func(clientv3.LeaseID) string, taken *map[int]bool) (res driver.Result, retry bool, err error) {
	lo, hi := shareRange(pfx)
	lp := limitPrefix(pfx, req.Limit)
	lpEnd := clientv3.GetPrefixRangeEnd(lp)
	for attempt := 0; ; attempt++ {
		l, name, reused, err := d.leaseNamed(ctx, req.Request, nameOf)
		if err != nil {
			return res, false, err
		}
		var renewed <-chan error
		if reused && needsRenew(l, req.TTL) {
			renewed = d.renewLeaseAsync(ctx, l, time.Now().Add(-req.TTL/50))
		}
		rctx, cancel := d.rpcCtx(ctx)
		resp, err := d.cli.Txn(rctx).
			If(
				clientv3.Compare(clientv3.CreateRevision(pfx+"/"), "=", 0).WithRange(lo),
				clientv3.Compare(clientv3.CreateRevision(lo), "=", 0).WithRange(lp),
				clientv3.Compare(clientv3.CreateRevision(lpEnd), "=", 0).WithRange(hi),
				clientv3.Compare(clientv3.CreateRevision(name), "=", 0),
			).
			Then(clientv3.OpPut(name, req.Metadata, clientv3.WithLease(l.id))).
			Else(
				clientv3.OpGet(pfx+"/", append(clientv3.WithFirstCreate(), clientv3.WithRange(lo))...),
				clientv3.OpGet(lo, clientv3.WithRange(lp), clientv3.WithKeysOnly(), clientv3.WithLimit(1)),
				clientv3.OpGet(lpEnd, clientv3.WithRange(hi), clientv3.WithKeysOnly(), clientv3.WithLimit(1)),
				clientv3.OpGet(lp, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(shareScan)),
			).
			Commit()
		cancel()
		var rerr error
		if renewed != nil {
			rerr = <-renewed
		}
		if isLeaseNotFound(err) || isLeaseNotFound(rerr) {
			d.leaseGone(l, name)
			if attempt == 0 {
				continue
			}
			return res, false, d.fail(ctx, "acquire shared", errLeaseGone)
		}
		if err != nil {
			// The entry may or may not have been written.
			d.discard(l, name, 0)
			return res, false, d.fail(ctx, "acquire shared", err)
		}
		if !resp.Succeeded {
			if rerr == nil || l.shared {
				d.giveBack(l, name)
			}
			return d.refused(ctx, req, pfx, resp, taken)
		}
		if rerr != nil {
			d.discard(l, name, resp.Header.Revision)
			return res, false, rerr
		}
		e := newEntry(name, resp.Header.Revision, req.Metadata, l)
		e.share, e.limit = true, req.Limit
		d.remember(req.Key, req.Token, e)
		return driver.Result{Acquired: true, Fence: uint64(e.rev), ValidUntil: l.validUntil(req.TTL)}, false, nil
	}
}

// refused reads what the Else branch of a share's transaction found: an
// error wrapping ErrLimitMismatch, a refusal with the HolderTTL of what
// stands in the way, or a retry when only the slot tried was taken.
func (d *etcdDriver) refused(ctx context.Context, req driver.SharedRequest, pfx string, resp *clientv3.TxnResponse, taken *map[int]bool) (driver.Result, bool, error) {
	if len(resp.Responses) != 4 {
		return driver.Result{}, false, d.fail(ctx, "acquire shared", fmt.Errorf("transaction answered %d reads of 4", len(resp.Responses)))
	}
	excl := resp.Responses[0].GetResponseRange()
	mine := resp.Responses[3].GetResponseRange()
	for _, r := range resp.Responses[1:3] {
		if kvs := r.GetResponseRange().GetKvs(); len(kvs) > 0 {
			return driver.Result{}, false, fmt.Errorf("%w: %q is shared with limit %d, not %d",
				driver.ErrLimitMismatch, req.Key, shareLimit(pfx, kvs[0].Key), req.Limit)
		}
	}
	var ttl time.Duration
	var err error
	switch {
	case excl.GetCount() > 0 && len(mine.GetKvs()) == 0:
		// An exclusive holder.
		ttl, err = d.shortestTTL(ctx, excl.GetKvs())
	case excl.GetCount() > 0 || (req.Limit > 0 && mine.GetCount() >= int64(req.Limit)):
		// A writer waits for the shares, or every permit is out.
		ttl, err = d.shortestTTL(ctx, mine.GetKvs())
	default:
		// Only the slot tried was taken.
		m := map[int]bool{}
		for _, kv := range mine.GetKvs() {
			if _, slot, ok := shareSeg(strings.TrimPrefix(string(kv.Key), pfx+"/")); ok {
				m[slot] = true
			}
		}
		*taken = m
		return driver.Result{}, true, nil
	}
	if err != nil {
		return driver.Result{}, false, d.fail(ctx, "acquire shared: lease TTL", err)
	}
	return driver.Result{HolderTTL: ttl}, false, nil
}

// shortestTTL is the shortest remaining TTL of the leases of kvs (of the
// first ttlSample distinct ones), at least 100 ms for a lease that is
// still there (etcd counts whole seconds), 0 when none is.
func (d *etcdDriver) shortestTTL(ctx context.Context, kvs []*mvccpb.KeyValue) (time.Duration, error) {
	var ids []int64
	for _, kv := range kvs {
		if kv.Lease != 0 && len(ids) < ttlSample && !containsID(ids, kv.Lease) {
			ids = append(ids, kv.Lease)
		}
	}
	ttls, err := d.readLeaseTTLs(ctx, ids)
	if err != nil {
		return 0, err
	}
	var short time.Duration
	for _, ttl := range ttls {
		if ttl < 0 {
			continue
		}
		ttl = max(ttl, 100*time.Millisecond)
		if short == 0 || ttl < short {
			short = ttl
		}
	}
	return short, nil
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// leaseNamed is leaseFor for an entry named nameOf(lease).
func (d *etcdDriver) leaseNamed(ctx context.Context, req driver.Request, nameOf func(clientv3.LeaseID) string) (l *lease, name string, reused bool, err error) {
	sec := leaseSeconds(req.TTL)
	if req.Hints.AutoRefresh {
		l, err := d.sharedLease(ctx, sec, nameOf)
		if err != nil {
			return nil, "", false, err
		}
		if l != nil {
			return l, nameOf(l.id), true, nil
		}
	}
	l, reused, err = d.takeLease(ctx, sec)
	if err != nil {
		return nil, "", false, err
	}
	return l, nameOf(l.id), reused, nil
}

// renewShare renews the share of req's token: its lease (a keep-alive, or
// a move to a longer lease) and its metadata, keeping its fence. done false
// means the share is gone: the caller takes a new one.
func (d *etcdDriver) renewShare(ctx context.Context, req driver.SharedRequest) (res driver.Result, done bool, err error) {
	start := time.Now()
	e, l, err := d.held(ctx, req.Key, req.Token)
	if errors.Is(err, driver.ErrNotHeld) {
		return res, false, nil
	}
	if err != nil {
		return res, true, err
	}
	defer e.unlock()
	if !e.share {
		return res, false, nil
	}
	if e.limit != req.Limit {
		return res, true, fmt.Errorf("%w: %q is shared with limit %d, not %d", driver.ErrLimitMismatch, req.Key, e.limit, req.Limit)
	}
	if sec := leaseSeconds(req.TTL); sec > l.sec {
		e.value = req.Metadata
		err := d.moveLease(ctx, req.Key, req.Token, e, l, sec)
		if errors.Is(err, driver.ErrNotHeld) {
			return res, false, nil
		}
		if err != nil {
			return res, true, err
		}
		return driver.Result{Acquired: true, Fence: uint64(e.rev), ValidUntil: d.leaseOf(e).validUntil(req.TTL)}, true, nil
	}
	renewed := d.renewLeaseAsync(ctx, l, start)
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).If(e.owned(l)...).
		Then(clientv3.OpPut(e.name, req.Metadata, clientv3.WithLease(l.id))).
		Commit()
	cancel()
	rerr := <-renewed
	switch {
	case errors.Is(rerr, errLeaseGone):
		d.forget(req.Key, req.Token, e)
		return res, false, nil
	case err != nil:
		return res, true, d.fail(ctx, "acquire shared", err)
	case !resp.Succeeded:
		d.forget(req.Key, req.Token, e)
		return res, false, nil
	case rerr != nil:
		return res, true, rerr
	}
	e.value = req.Metadata
	return driver.Result{Acquired: true, Fence: uint64(e.rev), ValidUntil: l.validUntil(req.TTL)}, true, nil
}

// releaseShare is Release of a share: a transaction deletes the entry if
// it is still the same incarnation on the lease (a permit's slot name is
// used by others after it). As for a mutex entry, an unknown outcome, or
// an answer slower than hedgeAfter, also frees it in the background: a
// lease of its own is revoked; on a shared lease the name is burned and the
// entry deleted by its create revision. e is locked by the caller.
func (d *etcdDriver) releaseShare(ctx context.Context, key, token string, e *entry, l *lease) error {
	cleanup := func() { d.revokeAsync(l, func() { d.forget(key, token, e) }) }
	if l.shared {
		cleanup = func() { d.leftBehind(key, token, e, l) }
	}
	hedge := time.AfterFunc(hedgeAfter, cleanup)
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).If(e.owned(l)...).Then(clientv3.OpDelete(e.name)).Commit()
	cancel()
	hedged := !hedge.Stop()
	if err != nil {
		if !hedged {
			cleanup()
		}
		return d.fail(ctx, "release", err)
	}
	d.drop(key, token, e, !hedged)
	if !resp.Succeeded {
		return fmt.Errorf("%w: %q: the share is gone (expired, revoked or deleted)", driver.ErrNotHeld, key)
	}
	if !l.shared {
		d.putBack(l)
	}
	return nil
}

// Holders implements driver.SharedLocker. It reads the whole queue in one
// range read, in create revision order, and the TTL of the leases of the
// grants (one TimeToLive per distinct lease, up to listLeaseReads in
// flight): two round trips. The grants are the shares, or else the first
// entry (the mutex holder); WritersWaiting counts the exclusive entries
// that do not hold (with RawKeys, the entries of nested keys too). A grant
// whose lease ran out meanwhile is left out.
func (d *etcdDriver) Holders(ctx context.Context, key string) (driver.Holders, error) {
	if err := d.check(ctx); err != nil {
		return driver.Holders{}, err
	}
	pfx := d.queuePrefix(key)
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Get(rctx, pfx+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	cancel()
	if err != nil {
		return driver.Holders{}, d.fail(ctx, "holders", err)
	}
	var shares, excl []*mvccpb.KeyValue
	for _, kv := range resp.Kvs {
		if isShare(pfx, kv.Key) {
			shares = append(shares, kv)
		} else {
			excl = append(excl, kv)
		}
	}
	grants := shares
	if len(grants) == 0 && len(excl) > 0 {
		grants = excl[:1]
	}
	var ids []int64
	for _, kv := range grants {
		if kv.Lease != 0 && !containsID(ids, kv.Lease) {
			ids = append(ids, kv.Lease)
		}
	}
	ttls, err := d.readLeaseTTLs(ctx, ids)
	if err != nil {
		return driver.Holders{}, d.fail(ctx, "holders: lease TTL", err)
	}
	var h driver.Holders
	for _, kv := range grants {
		var ttl time.Duration
		if kv.Lease != 0 {
			if ttl = ttls[kv.Lease]; ttl < 0 {
				continue // ran out since the read
			}
		}
		shared := isShare(pfx, kv.Key)
		h.Holders = append(h.Holders, driver.Holder{Shared: shared, Fence: uint64(kv.CreateRevision), TTL: ttl, Metadata: string(kv.Value)})
		if shared {
			h.Limit = shareLimit(pfx, kv.Key)
		}
	}
	h.WritersWaiting = len(excl)
	if len(shares) == 0 && len(excl) > 0 {
		h.WritersWaiting--
	}
	return h, nil
}

// shareInfo is what Inspect reports of key's shares, read in one
// transaction with the count of its exclusive entries (the waiters) and
// then the TTLs of their leases: the newest share's fence and metadata, the
// longest TTL. ok is false when no share is left. rev is the revision of
// the read.
func (d *etcdDriver) shareInfo(ctx context.Context, key, op string) (in driver.Info, rev int64, ok bool, err error) {
	pfx := d.queuePrefix(key)
	lo, hi := shareRange(pfx)
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).Then(
		clientv3.OpGet(lo, clientv3.WithRange(hi), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend)),
		clientv3.OpGet(pfx+"/", clientv3.WithRange(lo), clientv3.WithCountOnly()),
	).Commit()
	cancel()
	if err == nil && len(resp.Responses) != 2 {
		err = fmt.Errorf("transaction answered %d reads of 2", len(resp.Responses))
	}
	if err != nil {
		return in, 0, false, d.fail(ctx, op, err)
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	var ids []int64
	for _, kv := range kvs {
		if kv.Lease != 0 && !containsID(ids, kv.Lease) {
			ids = append(ids, kv.Lease)
		}
	}
	ttls, err := d.readLeaseTTLs(ctx, ids)
	if err != nil {
		return in, 0, false, d.fail(ctx, op+": lease TTL", err)
	}
	in.Waiters = int(resp.Responses[1].GetResponseRange().GetCount())
	for _, kv := range kvs { // newest first
		var ttl time.Duration
		if kv.Lease != 0 {
			if ttl = ttls[kv.Lease]; ttl < 0 {
				continue
			}
		}
		if !in.Held {
			in.Held, in.Fence, in.Metadata = true, uint64(kv.CreateRevision), string(kv.Value)
		}
		in.TTL = max(in.TTL, ttl)
	}
	return in, resp.Header.Revision, in.Held, nil
}

// forceShares is ForceRelease of a key whose holders are shares: it reads
// them (shareInfo) and deletes them all in a transaction that checks that
// none was created or changed since that read. done is false when that
// check failed.
func (d *etcdDriver) forceShares(ctx context.Context, key string) (in driver.Info, done bool, err error) {
	in, rev, ok, err := d.shareInfo(ctx, key, "force release")
	if err != nil || !ok {
		return driver.Info{}, false, err
	}
	lo, hi := shareRange(d.queuePrefix(key))
	rctx, cancel := d.rpcCtx(ctx)
	resp, err := d.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.ModRevision(lo), "<", rev+1).WithRange(hi)).
		Then(clientv3.OpDelete(lo, clientv3.WithRange(hi))).
		Commit()
	cancel()
	if err != nil {
		return driver.Info{}, false, d.fail(ctx, "force release", err)
	}
	return in, resp.Succeeded, nil
}
