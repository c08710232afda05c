package redlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

var (
	_ driver.Lister        = (*locker)(nil)
	_ driver.ForceReleaser = (*locker)(nil)
)

// List implements driver.Lister. Every node lists its held keys at once,
// as redisengine.Engine.List does on one server (SCAN in batches, each key
// checked against its info key), with each holder's token; a key is listed
// when a majority of nodes hold it for the same token, with what Inspect
// reports for it: the TTL a majority still holds it for, the fence most of
// them report, Waiters -1. It needs a majority of nodes to answer. Once a
// majority has, the others get as long again as that took (at least the
// node timeout) and are then left out: a key held on exactly a majority
// that includes a node left out is not listed.
func (d *locker) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	if d.closed.Load() {
		return nil, driver.ErrClosed
	}
	if !utf8.ValidString(prefix) {
		return nil, fmt.Errorf("%w: list prefix is not valid UTF-8", dlock.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type nodeKeys struct {
		node int
		keys []redisengine.HeldKey
		err  error
	}
	replies := make(chan nodeKeys, len(d.nodes))
	start := time.Now()
	for i, n := range d.nodes {
		go func() {
			keys, err := n.ListHolders(lctx, prefix)
			replies <- nodeKeys{i, keys, err}
		}()
	}
	heard := make([]bool, len(d.nodes))
	unheard := func() []string { return notHeard(d.nodes, heard) }
	t := tally{n: len(d.nodes), quorum: d.quorum}
	byKey := map[string][]holding{}
	var grace <-chan time.Time
collect:
	for range d.nodes {
		select {
		case r := <-replies:
			heard[r.node] = true
			if r.err != nil {
				t.fail(r.err)
				break
			}
			t.ok++
			for _, k := range r.keys {
				byKey[k.Key] = append(byKey[k.Key], holding{info: k.Info, token: k.Token})
			}
			if t.ok == t.quorum {
				grace = time.After(max(time.Since(start), d.nodeTimeout(0)))
			}
		case <-grace:
			break collect
		case <-ctx.Done():
			return nil, fmt.Errorf("redlock: list: %w (no answer from %s)", ctx.Err(), strings.Join(unheard(), ", "))
		}
	}
	if t.ok < t.quorum {
		return nil, t.unavailable("list", unheard())
	}
	var out []driver.KeyInfo
	for key, seen := range byKey {
		if in, _ := d.holder(seen); in.Held {
			out = append(out, driver.KeyInfo{Key: key, Info: in})
		}
	}
	slices.SortFunc(out, func(a, b driver.KeyInfo) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// ForceRelease implements driver.ForceReleaser. It reads the key on every
// node as Inspect does; when a majority holds it for one token it frees
// that holder on every node that has it, with one script per node that
// checks the token it read and, as Release does, announces the release to
// the node's first queued waiter (see redisengine.Engine.ForceReleaseHolder);
// the fence counters stay. It returns the holder's Info as Inspect reported
// it once a majority of nodes answered that the holder is gone there (freed
// now, or not held), so that the holder can no longer have a majority: its
// next Refresh or RefreshBatch is refused by a majority (ErrNotHeld).
// Nodes holding the key for another token (a minority, such as a split
// vote being given back) are left alone. It returns Held false when no
// majority held the key, or when the holder was gone from every node
// before the release reached it. When fewer than a majority answer, the
// error wraps ErrUnavailable; releases still in flight go on in the
// background.
func (d *locker) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	in, token, err := d.inspect(ctx, key)
	if err != nil || !in.Held {
		return in, err
	}
	t := tally{n: len(d.nodes), quorum: d.quorum}
	var invalid error
	f := startFanout(ctx, d.nodes, d.nodeTimeout(0), func(ctx context.Context, n *redisengine.Engine) (struct{}, error) {
		_, err := n.ForceReleaseHolder(ctx, key, token)
		return struct{}{}, err
	})
	err = f.collect(ctx, func(r reply[struct{}]) bool {
		if errors.Is(r.err, dlock.ErrInvalidKey) {
			invalid = r.err
		}
		t.count(r)
		return false // hear every node: the report says what was freed
	})
	switch {
	case err != nil:
		return driver.Info{}, fmt.Errorf("redlock: force release %q: %w", key, err)
	case t.ok == 0 && t.refused >= t.quorum:
		// Gone (released or expired) between the read and the release.
		return driver.Info{Waiters: -1}, nil
	case t.ok+t.refused >= t.quorum:
		return in, nil
	case invalid != nil:
		return driver.Info{}, fmt.Errorf("redlock: force release %q: %w", key, invalid)
	}
	return driver.Info{}, t.unavailable(fmt.Sprintf("force release %q", key), f.unheard())
}
