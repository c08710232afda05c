package zkdlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlock-go/dlock/driver"
)

// protectedPrefix starts the name of every node made by protected creation,
// as in go-zookeeper and Curator: "_c_<32 hex digits>-lock-<sequence>".
const protectedPrefix = "_c_"

// node is one lock node of this driver.
type node struct {
	keyPath string
	path    string
	name    string
	seq     int
	session int64
	// fence is the node's czxid, 0 until read.
	fence uint64
	// withParent is set when the same transaction created the key node:
	// its czxid is then ours.
	withParent bool
	// alone is set when the transaction that created the node proved it
	// the key node's only child: it heads the queue, as every later node
	// gets a higher sequence number.
	alone bool
	// keyCzxid and siblings come from the creating transaction's reply,
	// when it had the key node's Stat (else 0): the key node's czxid, and
	// its number of children right after the create, ours included.
	keyCzxid int64
	siblings int32
}

// parseSeq reads the sequence number after the last "lock-" of a node name,
// as zk.Lock does (and after "__" for the Python client's nodes).
func parseSeq(name string) (int, error) {
	parts := strings.Split(name, "lock-")
	if len(parts) == 1 {
		parts = strings.Split(name, "__")
	}
	return strconv.Atoi(parts[len(parts)-1])
}

// newGUID returns 32 random hex digits for the name of a protected node.
func newGUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("zkdlock: guid: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// create joins the key's queue with an exclusive lock node. When ctx ends
// before the create answers, or the answer is a connection failure after
// which the node may exist, the node is deleted (found by its guid) in the
// background; create returns at once, or within leaveWait on ctx's end (see
// goLeave).
func (d *zkDriver) create(ctx context.Context, keyPath string, data []byte) (*node, error) {
	return d.createAs(ctx, keyPath, "", data)
}

// createAs is create for a node whose name carries tag between its guid
// and "lock-": "" for an exclusive node, shareTag's for a share node.
func (d *zkDriver) createAs(ctx context.Context, keyPath, tag string, data []byte) (*node, error) {
	guid, err := newGUID()
	if err != nil {
		return nil, err
	}
	type result struct {
		n   *node
		err error
	}
	done := func(r result) (*node, error) {
		if r.err != nil && transient(r.err) {
			d.goReap(keyPath, "", guid) // the node may exist
		}
		return r.n, d.wrap(ctx, "creating a lock node under "+keyPath, r.err)
	}
	if ctx.Done() == nil { // ctx cannot end: no need for another goroutine
		n, err := d.createNode(keyPath, guid, tag, data)
		return done(result{n, err})
	}
	ch := make(chan result, 1)
	go func() {
		n, err := d.createNode(keyPath, guid, tag, data)
		ch <- result{n, err}
	}()
	select {
	case r := <-ch:
		return done(r)
	case <-ctx.Done():
	case <-d.closeCh:
	}
	// The caller leaves: leave nothing behind, without holding the caller
	// up for the create's answer and a delete.
	d.goLeave(keyPath, func() {
		r := <-ch
		switch {
		case r.err == nil:
			d.reap(keyPath, r.n.path, "")
		case transient(r.err):
			d.reap(keyPath, "", guid)
		}
	})
	if d.isClosed() {
		return nil, driver.ErrClosed
	}
	return nil, d.wrap(ctx, "creating a lock node under "+keyPath, ctx.Err())
}

// createNode is protected creation, blocking (tag as for createAs): it
// creates the key node too when needed (in one transaction with the lock
// node where it can), and after a connection loss looks for its node by
// guid before trying again.
//
// The lock node is created in one transaction with an empty write to the
// key node (and with the key node itself when it is believed absent). The
// write's reply is the key node's Stat right after our create: its mzxid is
// the transaction's zxid, the lock node's czxid, our fence; and when it
// counts one child, that child is ours, so the node heads the queue without
// a listing (see node.alone).
func (d *zkDriver) createNode(keyPath, guid, tag string, data []byte) (*node, error) {
	prefix := keyPath + "/" + protectedPrefix + guid + "-" + tag + "lock-"
	var (
		lastErr error
		plain   bool // the key node may not be written: no write in the transaction
	)
	for attempt := 0; attempt < maxCreateAttempts; attempt++ {
		var (
			path       string
			err        error
			withParent bool
			stat       *zk.Stat
		)
		lock := &zk.CreateRequest{Path: prefix, Data: data, Acl: d.acl, Flags: zk.FlagEphemeralSequential}
		touch := &zk.SetDataRequest{Path: keyPath, Version: -1}
		if d.hintAbsent(keyPath) {
			ops := []any{&zk.CreateRequest{Path: keyPath, Acl: d.acl, Flags: zk.FlagPersistent}, lock, touch}
			if plain {
				ops = ops[:2]
			}
			var res []zk.MultiResponse
			res, err = d.conn.Multi(ops...)
			switch {
			case err == nil && len(res) == len(ops):
				path, withParent = res[1].String, true
				if !plain {
					stat = res[2].Stat
				}
				d.setHint(keyPath, false)
			case errors.Is(err, zk.ErrNodeExists):
				d.setHint(keyPath, false)
				lastErr = err
				continue
			case errors.Is(err, zk.ErrNoNode):
				if err := d.ensurePath(parentOf(keyPath)); err != nil {
					return nil, err
				}
				lastErr = err
				continue
			case errors.Is(err, zk.ErrNoAuth) && !plain:
				plain = true // perhaps the write: try without it
				lastErr = err
				continue
			case err == nil:
				err = fmt.Errorf("zkdlock: multi returned %d results, want %d", len(res), len(ops))
			}
		} else if plain {
			path, err = d.conn.Create(prefix, data, zk.FlagEphemeralSequential, d.acl)
			if errors.Is(err, zk.ErrNoNode) {
				d.setHint(keyPath, true)
				lastErr = err
				continue
			}
		} else {
			var res []zk.MultiResponse
			res, err = d.conn.Multi(lock, touch)
			if err == nil && len(res) == 2 && res[1].Stat != nil {
				path, stat = res[0].String, res[1].Stat
			} else if err == nil {
				err = fmt.Errorf("zkdlock: multi returned %d results, want 2", len(res))
			}
			if errors.Is(err, zk.ErrNoNode) {
				d.setHint(keyPath, true)
				lastErr = err
				continue
			}
			if errors.Is(err, zk.ErrNoAuth) {
				// The key node's ACL may allow creating children but not
				// writing it: create alone, read the fence after.
				plain = true
				lastErr = err
				continue
			}
		}
		switch {
		case err == nil:
			n, err := d.newNode(keyPath, path, withParent)
			if n != nil && stat != nil {
				n.fence = uint64(stat.Mzxid)
				n.alone = stat.NumChildren == 1
				n.keyCzxid, n.siblings = stat.Czxid, stat.NumChildren
			}
			return n, err
		case errors.Is(err, zk.ErrSessionExpired):
			lastErr = err // the node died with the session; try again
		case transient(err):
			found, ferr := d.seekGUID(keyPath, guid)
			if errors.Is(ferr, zk.ErrSessionExpired) {
				lastErr = err // the node, if made, died with the session
				continue
			}
			if ferr != nil {
				return nil, err
			}
			if found != "" {
				return d.newNode(keyPath, found, false)
			}
			lastErr = err
		default:
			return nil, err
		}
	}
	return nil, fmt.Errorf("no lock node under %s after %d attempts (the key node kept changing): %w", keyPath, maxCreateAttempts, lastErr)
}

// newNode describes the lock node created at path under keyPath, in the
// current session; withParent says the same transaction created the key node.
func (d *zkDriver) newNode(keyPath, path string, withParent bool) (*node, error) {
	name := path[strings.LastIndexByte(path, '/')+1:]
	seq, err := parseSeq(name)
	if err != nil {
		return nil, fmt.Errorf("zkdlock: created node %q has no sequence number: %w", path, err)
	}
	return &node{keyPath: keyPath, path: path, name: name, seq: seq, session: d.conn.SessionID(), withParent: withParent}, nil
}

// seekGUID is findGUID after a connection failure: the listing may itself
// meet the failing connection (go-zookeeper fails the requests in flight
// while it tears the connection down, and queues later ones for the next),
// so a transient failure is tried again, up to maxCreateAttempts times with
// a short pause, before the node is given up as unknown.
func (d *zkDriver) seekGUID(keyPath, guid string) (string, error) {
	var err error
	for attempt := range maxCreateAttempts {
		var found string
		found, err = d.findGUID(keyPath, guid)
		if err == nil || !transient(err) || errors.Is(err, zk.ErrSessionExpired) || d.isClosed() {
			return found, err
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	return "", err
}

// findGUID returns the path of the node whose name carries guid, or "".
func (d *zkDriver) findGUID(keyPath, guid string) (string, error) {
	children, _, err := d.conn.Children(keyPath)
	if errors.Is(err, zk.ErrNoNode) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, c := range children {
		if strings.HasPrefix(c, protectedPrefix+guid+"-") {
			return keyPath + "/" + c, nil
		}
	}
	return "", nil
}

// parentOf returns the parent path of p ("/" for a top-level node).
func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// ensurePath creates p and its missing parents as persistent nodes.
func (d *zkDriver) ensurePath(p string) error {
	if p == "/" {
		return nil
	}
	cur := ""
	for _, seg := range strings.Split(p[1:], "/") {
		cur += "/" + seg
		if _, err := d.conn.Create(cur, nil, zk.FlagPersistent, d.acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("creating %s: %w", cur, err)
		}
	}
	return nil
}
