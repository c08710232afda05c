package zkdlock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
	"golang.org/x/sync/errgroup"

	"github.com/dlock-go/dlock/driver"
)

// dataMagic starts the data of lock nodes made by dlock. zk.Lock and Curator
// do not read lock node data, so this layout stays between dlock clients.
const dataMagic = "dlock1"

// encodeData is a lock node's data: "dlock1 <token hash> <TTL in ms>\n"
// followed by the metadata. The token itself is not stored, only the first
// 16 bytes of its SHA-256, in hex, to tell owners apart when debugging.
func encodeData(token string, ttl time.Duration, metadata string) []byte {
	sum := sha256.Sum256([]byte(token))
	return fmt.Appendf(nil, "%s %s %d\n%s", dataMagic, hex.EncodeToString(sum[:16]), ttl.Milliseconds(), metadata)
}

// encodeShareData is a share node's data: encodeData's with the limit
// after the TTL, "dlock1 <token hash> <TTL in ms> <limit>\n<metadata>".
func encodeShareData(token string, ttl time.Duration, limit int, metadata string) []byte {
	sum := sha256.Sum256([]byte(token))
	return fmt.Appendf(nil, "%s %s %d %d\n%s", dataMagic, hex.EncodeToString(sum[:16]), ttl.Milliseconds(), limit, metadata)
}

// decodeData reads what encodeData (or encodeShareData) wrote. Data of
// other clients' nodes (a zk.Lock's LockWithData, Curator's host address)
// is returned as the metadata, with ok false.
func decodeData(b []byte) (ttl time.Duration, metadata string, ok bool) {
	s := string(b)
	head, rest, found := strings.Cut(s, "\n")
	f := strings.Fields(head)
	if !found || len(f) != 3 && len(f) != 4 || f[0] != dataMagic {
		return 0, s, false
	}
	ms, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return 0, s, false
	}
	return time.Duration(ms) * time.Millisecond, rest, true
}

// Inspect reads the key's queue after a sync with the leader, so a release
// seen by another client is seen here too (and after the nodes this
// driver's waiters left under the key are gone, see settle). The holder is
// the lowest node: Fence is its czxid, Metadata its data, TTL the holder's
// TTL (for nodes of other clients, this driver's session timeout, after
// which a vanished holder's node is gone), Waiters the other nodes in the
// queue. A key held by shares reports the newest share's czxid and
// metadata and the longest TTL among them (see head).
func (d *zkDriver) Inspect(ctx context.Context, key string) (driver.Info, error) {
	keyPath, err := d.syncQueue(ctx, key, "inspecting")
	if err != nil {
		return driver.Info{}, err
	}
	h, err := d.head(ctx, keyPath)
	return h.info, err
}

// syncQueue prepares a read of key's queue that sees every change
// committed before it: it waits for this driver's removals of abandoned
// nodes under the key (settle), then syncs with the leader. It returns the
// key node's path; op names the read in errors.
func (d *zkDriver) syncQueue(ctx context.Context, key, op string) (string, error) {
	if d.isClosed() {
		return "", driver.ErrClosed
	}
	keyPath := d.keyPath(key)
	if err := d.settle(ctx, keyPath); err != nil {
		return "", d.wrap(ctx, op+" "+keyPath, err)
	}
	if err := d.sync(ctx, keyPath); err != nil {
		return "", err
	}
	return keyPath, nil
}

// sync makes the server the connection talks to catch up with the leader,
// so that the reads that follow see every change committed before it. A
// missing node is no error.
func (d *zkDriver) sync(ctx context.Context, path string) error {
	if _, err := call(ctx, func() (string, error) { return d.conn.Sync(path) }); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return d.wrap(ctx, "sync "+path, err)
	}
	return nil
}

// queueHead is the holder of a key as head read it: what Inspect reports,
// and the path and Stat of the holder's node; for a key held by shares,
// the path and Stat of each share node (the newest is path and stat).
// holders is what Holders reports of the key.
type queueHead struct {
	info    driver.Info
	path    string
	stat    *zk.Stat
	shares  []readNode
	holders driver.Holders
}

// readNode is a lock node as a Get read it.
type readNode struct {
	path string
	data []byte
	stat *zk.Stat
}

// head reads the key's queue. The holder is the lowest lock node, when it
// is exclusive; when it is a share node, the holders are the share nodes
// that lead the queue (see grantedRun). A key with no lock node (or no key
// node) gives Held false. Each holder's node is read (one Get each, sent
// together).
func (d *zkDriver) head(ctx context.Context, keyPath string) (queueHead, error) {
	for attempt := 0; attempt < 5; attempt++ {
		kids, err := d.children(ctx, keyPath)
		if errors.Is(err, zk.ErrNoNode) {
			return queueHead{}, nil
		}
		if err != nil {
			return queueHead{}, d.wrap(ctx, "listing "+keyPath, err)
		}
		q := sortQueue(kids.names)
		if len(q) == 0 {
			return queueHead{}, nil
		}
		run := grantedRun(q)
		nodes, err := d.readNodes(ctx, keyPath, run)
		if errors.Is(err, zk.ErrNoNode) {
			continue // released meanwhile
		}
		if err != nil {
			return queueHead{}, err
		}
		h := queueHead{holders: driver.Holders{Holders: make([]driver.Holder, len(nodes))}}
		for _, c := range q[1:] {
			if !c.share {
				h.holders.WritersWaiting++
			}
		}
		newest := 0
		for i, rn := range nodes {
			ttl, meta, ok := decodeData(rn.data)
			if !ok {
				ttl = d.sessionTimeout()
			}
			h.holders.Holders[i] = driver.Holder{Shared: run[i].share, Fence: uint64(rn.stat.Czxid), TTL: ttl, Metadata: meta}
			if rn.stat.Czxid > nodes[newest].stat.Czxid {
				newest = i
			}
			h.info.TTL = max(h.info.TTL, ttl)
		}
		if run[0].share {
			h.shares = nodes
			h.holders.Limit = run[0].limit
		}
		g := h.holders.Holders[newest]
		h.info = driver.Info{Held: true, Fence: g.Fence, TTL: h.info.TTL, Metadata: g.Metadata, Waiters: len(q) - len(run)}
		h.path, h.stat = nodes[newest].path, nodes[newest].stat
		return h, nil
	}
	return queueHead{}, fmt.Errorf("zookeeper: %s: the queue kept changing while it was read", keyPath)
}

// readNodes reads the data and Stat of each node of q under keyPath, all
// requests in flight at once. A node gone meanwhile gives zk.ErrNoNode,
// unwrapped.
func (d *zkDriver) readNodes(ctx context.Context, keyPath string, q []qnode) ([]readNode, error) {
	out := make([]readNode, len(q))
	read := func(i int) error {
		path := keyPath + "/" + q[i].name
		rn, err := call(ctx, func() (readNode, error) {
			data, stat, err := d.conn.Get(path)
			return readNode{path, data, stat}, err
		})
		if errors.Is(err, zk.ErrNoNode) {
			return zk.ErrNoNode
		}
		if err != nil {
			return d.wrap(ctx, "reading "+q[i].name, err)
		}
		out[i] = rn
		return nil
	}
	if len(q) == 1 {
		return out, read(0)
	}
	var g errgroup.Group
	g.SetLimit(listReads)
	for i := range q {
		g.Go(func() error { return read(i) })
	}
	return out, g.Wait()
}
