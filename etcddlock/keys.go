package etcddlock

import (
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// escapeKey makes a lock key safe to use as one etcd path segment: "%"
// becomes "%25" and "/" becomes "%2F", nothing else changes. The mapping is
// one-to-one, so two different keys never share a queue, and the result has
// no "/", so the queue prefix of one key (P + escaped + "/") never contains
// the entries of another.
func escapeKey(k string) string {
	if !strings.ContainsAny(k, "%/") {
		return k
	}
	var b strings.Builder
	b.Grow(len(k) + 8)
	for i := 0; i < len(k); i++ {
		switch c := k[i]; c {
		case '%':
			b.WriteString("%25")
		case '/':
			b.WriteString("%2F")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// entryName is the etcd key of one queue entry: the queue prefix, "/", and
// the lease ID in lower-case hex — the key concurrency.Mutex writes for a
// session with that lease.
func entryName(pfx string, id clientv3.LeaseID) string {
	return fmt.Sprintf("%s/%x", pfx, int64(id))
}
