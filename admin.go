package dlock

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/dlock-go/dlock/driver"
)

// List returns the keys held now whose names start with prefix (every held
// key when prefix is empty), in bytewise key order, each with what Inspect
// reports for it. It is meant for operators' tools such as `dlock list`:
// it reads the whole namespace in batches, so it costs more than Inspect.
// A backend whose driver cannot enumerate keys returns an error matching
// ErrUnsupported. prefix must be valid UTF-8 of at most MaxKeyLen bytes
// (ErrInvalidKey).
func (c *Client) List(ctx context.Context, prefix string) ([]Info, error) {
	if len(prefix) > MaxKeyLen || !utf8.ValidString(prefix) {
		return nil, fmt.Errorf("%w: prefix must be valid UTF-8 of at most %d bytes", ErrInvalidKey, MaxKeyLen)
	}
	if c.isClosed() {
		return nil, ErrClosed
	}
	ls, ok := c.d.(driver.Lister)
	if !ok {
		return nil, fmt.Errorf("%w: this backend cannot list its locks", ErrUnsupported)
	}
	keys, err := ls.List(ctx, prefix)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	out := make([]Info, len(keys))
	for i, k := range keys {
		out[i] = infoOf(k.Key, k.Info)
	}
	return out, nil
}

// ForceUnlock frees key whoever holds it and returns what it freed: the
// holder's Info, or Held false when the key was free. It is for operators
// (`dlock unlock --any-owner`) clearing a lock whose holder is known to be
// gone; an application releases its own locks with Lock.Unlock. The freed
// holder is not told at once: it finds out at its next refresh (its Done
// closes and Err matches ErrLost), so until then two owners may both believe
// they hold the key — which is what fencing tokens are for: the next grant's
// fence is higher than the freed one's. Waiters are woken as by a release.
// A backend whose driver cannot do it returns an error matching
// ErrUnsupported.
func (c *Client) ForceUnlock(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if c.isClosed() {
		return Info{}, ErrClosed
	}
	fr, ok := c.d.(driver.ForceReleaser)
	if !ok {
		return Info{}, fmt.Errorf("%w: this backend cannot release a lock whatever its owner", ErrUnsupported)
	}
	in, err := fr.ForceRelease(ctx, key)
	if err != nil {
		return Info{}, ctxErr(ctx, err)
	}
	if in.Held {
		c.log.Warn("dlock: lock freed whatever its owner (ForceUnlock)", "key", key, "fence", in.Fence, "metadata", in.Metadata)
	}
	return infoOf(key, in), nil
}

func infoOf(key string, in driver.Info) Info {
	return Info{Key: key, Held: in.Held, Fence: in.Fence, TTL: in.TTL, Metadata: in.Metadata, Waiters: in.Waiters}
}
