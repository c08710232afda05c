package redisengine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

var (
	_ driver.Lister        = (*Engine)(nil)
	_ driver.ForceReleaser = (*Engine)(nil)
)

// HeldKey is one key held on a server, as ListHolders reports it.
type HeldKey struct {
	driver.KeyInfo
	// Token is the holder's owner token.
	Token string
}

// List implements driver.Lister. It SCANs the database (every master of a
// Cluster) in batches of 500 (Config.ListBatch) for the info keys of held
// locks and of shared grants, matching Prefix+"\xff{*}*info:"+prefix+"*"
// with the glob characters of both prefixes escaped (names that are not
// exactly an info or sinfo key of the prefix are dropped), and checks each
// lock they name with the inspect script, one pipeline per batch: a key is
// listed when its lock key holds the token that its info key names, or it
// has live shared grants, with what Inspect reports for it. So it lists
// only dlock's locks of the driver's prefix: never the companion keys, an
// application's other keys, or a key held by another library (a plain
// SET NX, which has no info key). Its cost grows with the size of the
// whole database, not with the number of locks: SCAN visits every key.
func (e *Engine) List(ctx context.Context, prefix string) ([]driver.KeyInfo, error) {
	held, err := e.ListHolders(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]driver.KeyInfo, len(held))
	for i, h := range held {
		out[i] = h.KeyInfo
	}
	return out, nil
}

// ListHolders is List that also reports each holder's owner token, for a
// driver that combines the answers of several servers (package redlock).
func (e *Engine) ListHolders(ctx context.Context, prefix string) ([]HeldKey, error) {
	if e.closed.Load() {
		return nil, driver.ErrClosed
	}
	if !utf8.ValidString(prefix) {
		return nil, fmt.Errorf("%w: list prefix is not valid UTF-8", dlock.ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &lister{e: e, prefix: prefix, seen: map[string]struct{}{}}
	pattern := globEscape(e.ks.prefix) + "\xff{*}*" + kindInfo + globEscape(prefix) + "*"
	// The scan runs in its own goroutine so that the call returns when ctx
	// ends even if the client ignores context deadlines on sockets; the
	// goroutine stops at its next batch.
	done := make(chan error, 1)
	go func() {
		done <- e.forEachMaster(ctx, func(ctx context.Context, c redis.Cmdable) error {
			return l.scan(ctx, c, pattern)
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			return nil, e.unavailable(ctx, err)
		}
	case <-ctx.Done():
		return nil, e.unavailable(ctx, ctx.Err())
	}
	slices.SortFunc(l.out, func(a, b HeldKey) int { return strings.Compare(a.Key, b.Key) })
	return l.out, nil
}

// forEachMaster calls fn with every master of the client (in parallel on a
// Cluster or a Ring), or with the client itself.
func (e *Engine) forEachMaster(ctx context.Context, fn func(context.Context, redis.Cmdable) error) error {
	switch c := e.rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return fn(ctx, m) })
	case *redis.Ring:
		return c.ForEachShard(ctx, func(ctx context.Context, s *redis.Client) error { return fn(ctx, s) })
	}
	return fn(ctx, e.rdb)
}

// lister collects the held keys of one List call.
type lister struct {
	e      *Engine
	prefix string

	mu   sync.Mutex
	seen map[string]struct{} // names already checked (SCAN may repeat keys)
	out  []HeldKey
}

// scan walks the keys of one server matching pattern, batch by batch.
func (l *lister) scan(ctx context.Context, c redis.Cmdable, pattern string) error {
	var cursor uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		keys, next, err := c.Scan(ctx, cursor, pattern, int64(l.e.listBatch)).Result()
		if err != nil {
			return err
		}
		var names []string
		l.mu.Lock()
		for _, k := range keys {
			name, ok := l.e.ks.infoName(k)
			if !ok || !strings.HasPrefix(name, l.prefix) {
				continue
			}
			if _, dup := l.seen[name]; dup {
				continue
			}
			l.seen[name] = struct{}{}
			names = append(names, name)
		}
		l.mu.Unlock()
		for len(names) > 0 {
			n := min(len(names), l.e.listBatch)
			if err := l.check(ctx, names[:n]); err != nil {
				return err
			}
			names = names[n:]
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// check runs the inspect script for names in one pipeline and keeps those
// a dlock holder holds.
func (l *lister) check(ctx context.Context, names []string) error {
	calls := make([]scriptCall, len(names))
	for i, name := range names {
		calls[i] = scriptCall{keys: l.e.ks.inspectKeys(name)}
	}
	cmds := l.e.pipelineScript(ctx, inspectScript, calls)
	var found []HeldKey
	for i, cmd := range cmds {
		v, err := cmd.Result()
		if err != nil {
			return err
		}
		in, token, state, err := parseInspect(v)
		if err != nil {
			return err
		}
		// A fence of zero: the lock key holds something other than the
		// token the info key names (another library's lock, or the info
		// key outlived a lock deleted by other code).
		if state != 1 || in.Fence == 0 {
			continue
		}
		in.Held = true
		found = append(found, HeldKey{KeyInfo: driver.KeyInfo{Key: names[i], Info: in}, Token: token})
	}
	l.mu.Lock()
	l.out = append(l.out, found...)
	l.mu.Unlock()
	return nil
}

// infoName returns the lock name whose info key (or sinfo key) is k, and
// whether k is exactly the info or sinfo key of a valid name under the
// driver's prefix.
func (ks keyspace) infoName(k string) (string, bool) {
	rest, ok := strings.CutPrefix(k, ks.prefix+"\xff{")
	if !ok {
		return "", false
	}
	// The tag holds no '}': the first one closes it.
	tag, rest, ok := strings.Cut(rest, "}")
	if !ok {
		return "", false
	}
	name, ok := strings.CutPrefix(rest, kindInfo)
	if !ok {
		name, ok = strings.CutPrefix(rest, kindSInfo)
	}
	if !ok || name == "" || len(name) > dlock.MaxKeyLen || !utf8.ValidString(name) || ks.tag(name) != tag {
		return "", false
	}
	return name, true
}

// globEscape escapes the characters that Redis glob patterns (SCAN MATCH)
// give a meaning, so that s matches only itself.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ForceRelease implements driver.ForceReleaser with one script call, one
// round trip: it reads the holder (token, fence, metadata, PTTL, queued
// waiters), deletes the lock key and the info key and announces the release
// on the key's channel naming the first queued waiter, exactly as Release
// does; the fence counter stays. A key with shared grants has every one of
// them freed, reported as Inspect reports them; the key's waiting writers
// go in any case. A key held by another library (a string
// with an expiry, such as a SET NX PX lock) is freed too and reported with
// fence 0 and no metadata, as Inspect reports it. A key that holds
// something other than a lock (a string without an expiry, or another
// type) is left alone, with an error matching ErrInvalidKey. The freed
// holder's next Refresh, RefreshBatch or Release finds another value in
// the lock key and returns an error wrapping ErrNotHeld.
func (e *Engine) ForceRelease(ctx context.Context, key string) (driver.Info, error) {
	return e.forceRelease(ctx, key, []any{e.ks.channel(key)})
}

// ForceReleaseHolder is ForceRelease of one holder, for a driver that
// combines several servers (package redlock): it frees key only if the lock
// key holds token, in the same one script, and returns an error wrapping
// driver.ErrNotHeld when it holds another value or none. A key with shared
// grants has them all freed when token is one of them. Unlike Release,
// it works for any token and frees a lock of another library too, and it
// leaves alone a key that holds no lock (ErrInvalidKey).
func (e *Engine) ForceReleaseHolder(ctx context.Context, key, token string) (driver.Info, error) {
	in, err := e.forceRelease(ctx, key, []any{e.ks.channel(key), token})
	if err == nil && !in.Held {
		return driver.Info{}, fmt.Errorf("%w: %q", driver.ErrNotHeld, key)
	}
	return in, err
}

func (e *Engine) forceRelease(ctx context.Context, key string, args []any) (driver.Info, error) {
	all := e.ks.allKeys(key)
	v, err := e.run(ctx, forceScript, pick(all, kLock, kInfo, kFence, kQueue, kWaits, kShares, kSInfo, kSLimit, kWriters), args, nil)
	if err != nil {
		return driver.Info{}, err
	}
	in, _, state, err := parseInspect(v)
	if err != nil {
		return driver.Info{}, e.unavailable(ctx, err)
	}
	switch state {
	case 0:
		return in, nil
	case 1:
		in.Held = true
		return in, nil
	case 3:
		return driver.Info{Waiters: in.Waiters}, nil
	}
	return driver.Info{}, fmt.Errorf("%w: redis key %q holds no lock (a value without an expiry, or not a string); left alone", dlock.ErrInvalidKey, all[0])
}
