package etcddlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

var (
	_ driver.Lister        = (*etcdDriver)(nil)
	_ driver.ForceReleaser = (*etcdDriver)(nil)
)

// Bounds of List.
const (
	// listPage is the number of etcd keys one range read of List returns
	// at most. Each key is a queue entry (with its value, the lock's
	// metadata), so a page stays far below etcd's request size limit.
	listPage = 128
	// listLeaseReads bounds the lease TTL reads of List in flight at once.
	listLeaseReads = 16
	// listRestarts bounds how often List starts again when etcd compacted
	// the revision of its snapshot while it read the pages.
	listRestarts = 3
	// forceAttempts bounds how often ForceRelease reads the queue again
	// when the holder it read changed before its delete.
	forceAttempts = 5
)

// listPageHook, when set (by tests), runs after each page of List but the
// last.
var listPageHook func()

// queueEnt is the first entry of a queue (the holder) and the number of
// entries, as List collects them.
type queueEnt struct {
	key        string // the lock key, decoded
	rev, lease int64
	value      string
	count      int
	// headShare is set when the entry with the lowest create revision is
	// one of the key's shares (family.go): its holders are then the
	// shares, counted in shares, with the newest one's create revision and
	// value and the distinct leases of them all.
	headShare   bool
	shares      int
	shareRev    int64
	shareValue  string
	shareLeases []int64
}

// List implements driver.Lister. It reads the range of etcd keys that
// start with the queue prefix of prefix (the configured prefix followed by
// the escaped prefix), in pages of listPage keys, every page at the
// revision of the first, so the listing is one consistent snapshot (read
// again from the start, up to listRestarts times, when etcd compacts that
// revision meanwhile). Each
// queue's entry with the lowest create revision is its holder, as in
// Inspect: Fence is that revision, Metadata its value, Waiters the other
// entries, TTL the remaining TTL of its lease (one TimeToLive per distinct
// lease, so one for all the locks on a shared lease; up to listLeaseReads
// in flight). A key whose lease ran out after the snapshot is left out.
// Keys come back decoded and sorted bytewise (escaping does not keep the
// order: "/" becomes "%2F", which sorts before "&").
//
// Only queues are listed: etcd keys under the prefix that are not of the
// form escape(K) + "/" + entry (an application's other keys, names that
// escapeKey cannot have produced, or K not a valid lock key) are skipped.
// With RawKeys, an entry is an etcd key whose last segment is a lease ID in
// hex on a key with a lease, as concurrency.Mutex writes them; its lock key
// is what comes before that segment. Queues nest with RawKeys, and a
// listed key's Info then counts the entries of nested keys too, as Inspect
// does.
func (d *etcdDriver) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	if err := d.check(ctx); err != nil {
		return nil, err
	}
	start := d.prefix + prefix
	if !d.raw {
		start = d.prefix + escapeKey(prefix)
	}
	end := clientv3.GetPrefixRangeEnd(start)
	if start == "" {
		start, end = "\x00", "\x00" // the whole key space
	}
	first := start
	queues := map[string]*queueEnt{}
	var rev int64
	for restarts := 0; ; {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := d.rpcCtx(ctx)
		resp, err := d.cli.Get(rctx, start, opts...)
		cancel()
		if rev != 0 && isCompacted(err) && restarts < listRestarts {
			// The snapshot's revision was compacted away between two
			// pages: start again at the current one.
			restarts++
			start, rev, queues = first, 0, map[string]*queueEnt{}
			continue
		}
		if err != nil {
			return nil, d.fail(ctx, "list", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			key, share, ok := d.entryKey(string(kv.Key), kv.Lease)
			if !ok || !strings.HasPrefix(key, prefix) {
				continue
			}
			q := queues[key]
			if q == nil {
				q = &queueEnt{key: key}
				queues[key] = q
			}
			q.count++
			if q.count == 1 || kv.CreateRevision < q.rev {
				q.rev, q.lease, q.value, q.headShare = kv.CreateRevision, kv.Lease, string(kv.Value), share
			}
			if share {
				q.shares++
				if kv.CreateRevision > q.shareRev {
					q.shareRev, q.shareValue = kv.CreateRevision, string(kv.Value)
				}
				if kv.Lease != 0 && !containsID(q.shareLeases, kv.Lease) {
					q.shareLeases = append(q.shareLeases, kv.Lease)
				}
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		if listPageHook != nil {
			listPageHook()
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	keys := make([]*queueEnt, 0, len(queues))
	for _, q := range queues {
		keys = append(keys, q)
	}
	slices.SortFunc(keys, func(a, b *queueEnt) int { return strings.Compare(a.key, b.key) })
	heads := keys
	if d.raw {
		heads = nestQueues(keys)
	}
	ttls, err := d.leaseTTLs(ctx, heads)
	if err != nil {
		return nil, err
	}
	out := make([]driver.KeyInfo, 0, len(heads))
	for _, q := range heads {
		if q.headShare {
			// As Inspect reports shares: the newest one's fence and
			// metadata, the longest TTL of them all.
			in := driver.Info{Held: true, Fence: uint64(q.shareRev), Metadata: q.shareValue, Waiters: q.count - q.shares, TTL: -1}
			for _, id := range q.shareLeases {
				in.TTL = max(in.TTL, ttls[id])
			}
			if len(q.shareLeases) == 0 {
				in.TTL = 0
			}
			if in.TTL < 0 {
				continue // every share ran out since the snapshot
			}
			out = append(out, driver.KeyInfo{Key: q.key, Info: in})
			continue
		}
		in := driver.Info{Held: true, Fence: uint64(q.rev), Metadata: q.value, Waiters: q.count - 1}
		if q.lease != 0 {
			ttl := ttls[q.lease]
			if ttl < 0 {
				continue // ran out since the snapshot: the key is gone
			}
			in.TTL = ttl
		}
		out = append(out, driver.KeyInfo{Key: q.key, Info: in})
	}
	return out, nil
}

func isCompacted(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrGRPCCompacted) ||
		rpctypes.ErrorDesc(err) == rpctypes.ErrGRPCCompacted.Error())
}

// entryKey returns the lock key of the queue the etcd key name is an entry
// of, whether the entry is a share of it (family.go), and whether it is an
// entry at all.
func (d *etcdDriver) entryKey(name string, lease int64) (key string, share, ok bool) {
	rest, ok := strings.CutPrefix(name, d.prefix)
	if !ok {
		return "", false, false
	}
	if d.raw {
		i := strings.LastIndexByte(rest, '/')
		if i < 0 || lease == 0 {
			return "", false, false
		}
		_, _, share = shareSeg(rest[i+1:])
		if !share && !isLeaseName(rest[i+1:]) {
			return "", false, false
		}
		key = rest[:i]
	} else {
		seg, tail, ok := strings.Cut(rest, "/")
		if !ok {
			return "", false, false
		}
		if key, ok = unescapeKey(seg); !ok {
			return "", false, false
		}
		share = strings.HasPrefix(tail, shareMark)
	}
	if dlock.ValidateKey(key) != nil {
		return "", false, false
	}
	return key, share, true
}

// isLeaseName reports whether s is a lease ID as entryName (and
// concurrency.Mutex) writes it: lower-case hex without leading zeros.
func isLeaseName(s string) bool {
	if s == "" || len(s) > 16 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// unescapeKey inverts escapeKey. It reports false for a string escapeKey
// cannot have produced (another "%" sequence, a "/").
func unescapeKey(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, !strings.Contains(s, "/")
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '/':
			return "", false
		case c != '%':
			b.WriteByte(c)
		case strings.HasPrefix(s[i:], "%25"):
			b.WriteByte('%')
			i += 2
		case strings.HasPrefix(s[i:], "%2F"):
			b.WriteByte('/')
			i += 2
		default:
			return "", false
		}
	}
	return b.String(), true
}

// nestQueues merges, for RawKeys, the queues of keys nested under each key
// (K + "/" + ...) into its own, as Inspect sees them: the holder is the
// lowest create revision of them all, the waiters all others. keys is
// sorted, so the keys nested under K follow it directly.
func nestQueues(keys []*queueEnt) []*queueEnt {
	out := make([]*queueEnt, len(keys))
	for i, q := range keys {
		m := *q
		for _, n := range keys[i+1:] {
			if !strings.HasPrefix(n.key, q.key+"/") {
				break
			}
			m.count += n.count
			if n.rev < m.rev {
				m.rev, m.lease, m.value, m.headShare = n.rev, n.lease, n.value, false
			}
		}
		out[i] = &m
	}
	return out
}

// leaseTTLs reads the remaining TTL of the distinct leases of the queues'
// holders (of every share, for a queue whose holders are shares), a few at
// a time; a lease that is gone gets -1.
func (d *etcdDriver) leaseTTLs(ctx context.Context, queues []*queueEnt) (map[int64]time.Duration, error) {
	seen := map[int64]bool{}
	var ids []int64
	add := func(id int64) {
		if id != 0 && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	for _, q := range queues {
		if q.headShare {
			for _, id := range q.shareLeases {
				add(id)
			}
		} else {
			add(q.lease)
		}
	}
	ttls, err := d.readLeaseTTLs(ctx, ids)
	if err != nil {
		return nil, d.fail(ctx, "list: lease TTL", err)
	}
	return ttls, nil
}

// readLeaseTTLs reads the remaining TTL of the leases ids, up to
// listLeaseReads in flight; a lease that is gone gets -1. The error is
// not wrapped.
func (d *etcdDriver) readLeaseTTLs(ctx context.Context, ids []int64) (map[int64]time.Duration, error) {
	ttls := make(map[int64]time.Duration, len(ids))
	var mu sync.Mutex // guards ttls, written by the reads below
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(listLeaseReads)
	for _, id := range ids {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			ttl, err := d.leaseTTL(gctx, id)
			if err != nil {
				return err
			}
			mu.Lock()
			ttls[id] = ttl
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return ttls, nil
}

// leaseTTL is the remaining TTL of lease id as etcd reports it (whole
// seconds), or -1 when the lease is gone.
func (d *etcdDriver) leaseTTL(ctx context.Context, id int64) (time.Duration, error) {
	rctx, cancel := d.rpcCtx(ctx)
	defer cancel()
	tr, err := d.cli.TimeToLive(rctx, clientv3.LeaseID(id))
	if isLeaseNotFound(err) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	if tr.TTL < 0 {
		return -1, nil
	}
	return time.Duration(tr.TTL) * time.Second, nil
}

// ForceRelease implements driver.ForceReleaser. It reads the queue's first
// entry (lowest create revision), as Inspect does, and the TTL of its
// lease, then deletes that entry in a transaction that compares its create
// and mod revisions with what it read: it deletes exactly the holder it
// reports, or nothing (the holder released, expired, was replaced or moved
// to another lease meanwhile), in which case it reads again, up to
// forceAttempts times. Three round trips (two on an entry without a
// lease). The next waiter, which watches this entry, takes the lock as on a
// release; fences are create revisions, so the next grant's is higher. The
// freed holder's next Refresh or RefreshBatch, which checks its entry's
// create revision, reports ErrNotHeld, even while its (shared) lease lives
// on. With RawKeys the queue is Inspect's, nested keys included: the entry
// freed may be that of a key nested under key.
func (d *etcdDriver) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	if err := d.check(ctx); err != nil {
		return driver.Info{}, err
	}
	for range forceAttempts {
		kv, in, err := d.head(ctx, key, "force release")
		if err != nil || kv == nil {
			return in, err
		}
		if isShare(d.queuePrefix(key), kv.Key) {
			// The holders are shares: free them all.
			in, done, err := d.forceShares(ctx, key)
			if err != nil || done {
				return in, err
			}
			continue
		}
		if kv.Lease != 0 {
			ttl, err := d.leaseTTL(ctx, kv.Lease)
			if err != nil {
				return driver.Info{}, d.fail(ctx, "force release", err)
			}
			if ttl < 0 {
				continue // the entry went with its lease: read again
			}
			in.TTL = ttl
		}
		rctx, cancel := d.rpcCtx(ctx)
		tresp, err := d.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(string(kv.Key)), "=", kv.CreateRevision),
				clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision)).
			Then(clientv3.OpDelete(string(kv.Key))).
			Commit()
		cancel()
		if err != nil {
			return driver.Info{}, d.fail(ctx, "force release", err)
		}
		if tresp.Succeeded {
			return in, nil
		}
	}
	return driver.Info{}, fmt.Errorf("etcd %s: force release %q: the queue kept changing while it was read", d.addr, key)
}
