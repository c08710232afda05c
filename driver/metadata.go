package driver

import "context"

// MetadataSetter is implemented by drivers that can change the metadata of
// a held lease in place: what dlock.Election.Proclaim uses to change a
// leader's value without a new term on backends whose Acquire cannot renew
// a held key (Capabilities.ReacquireWithToken unset).
//
// SetMetadata replaces the metadata stored with the grant of key that token
// holds, leaving its fence and its expiry as they are, in one atomic step:
// Inspect and Holders report the new metadata from then on, and watchers of
// the key (Notifier) may be told of the change. It returns an error wrapping
// ErrNotHeld, and changes nothing, when token holds no live grant of key.
// Any other error leaves the outcome unknown: the metadata may or may not
// have changed, and the grant is the holder's as before.
type MetadataSetter interface {
	Locker
	SetMetadata(ctx context.Context, key, token, metadata string) error
}
