package redlock

import (
	"context"
	"fmt"

	"github.com/dlock-go/dlock/driver"
	"github.com/dlock-go/dlock/internal/redisengine"
)

var _ driver.MetadataSetter = (*locker)(nil)

// SetMetadata implements driver.MetadataSetter: on every node at once, one
// script replaces the metadata of the grant token holds there, keeping its
// fence and expiry. It succeeds when a majority did. When so many nodes
// say the key is not token's that no majority can, the error wraps
// ErrNotHeld; the nodes that changed keep the new metadata, which the
// holder's Inspect reads only from a majority.
func (d *locker) SetMetadata(ctx context.Context, key, token, metadata string) error {
	if d.closed.Load() {
		return driver.ErrClosed
	}
	t := tally{n: len(d.nodes), quorum: d.quorum}
	f := startFanout(ctx, d.nodes, d.nodeTimeout(0), func(ctx context.Context, n *redisengine.Engine) (struct{}, error) {
		return struct{}{}, n.SetMetadata(ctx, key, token, metadata)
	})
	if err := f.collect(ctx, t.count); err != nil && t.ok < t.quorum {
		return fmt.Errorf("redlock: set metadata of %q: %w", key, err)
	}
	return t.result("set metadata of", key, f.unheard())
}
