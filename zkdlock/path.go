package zkdlock

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dlock-go/dlock/driver"
)

// DefaultBase is the base path used when a URL or Options names none.
const DefaultBase = "/dlock"

// Path returns the node path of key's lock under base: base + "/" + the
// encoded key. A zk.Lock from go-zookeeper (or a Curator InterProcessMutex)
// made on this path shares the lock and its FIFO queue with dlock clients:
//
//	l := zk.NewLock(conn, zkdlock.Path("/locks", "orders/42"), zk.WorldACL(zk.PermAll))
//
// The encoding is injective and keeps every key in one child node of base:
// printable ASCII other than "/" and "%", and Unicode characters ZooKeeper
// accepts in node names, are kept as they are; every other byte is written
// as %XX (upper-case hex), so "a/b" becomes "a%2Fb" and "a%2Fb" becomes
// "a%252Fb". The names "." and ".." become "%2E" and "%2E%2E", and
// "zookeeper" directly under the root becomes "%7Aookeeper". A plain key
// such as "orders-42" is its own node name, so Path("/locks", "orders-42")
// is "/locks/orders-42".
func Path(base, key string) string {
	base = strings.TrimRight(base, "/")
	name := encodeKey(key)
	if base == "" && name == "zookeeper" {
		name = "%7Aookeeper"
	}
	return base + "/" + name
}

func encodeKey(key string) string {
	switch key {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	var b strings.Builder
	b.Grow(len(key))
	for i := 0; i < len(key); {
		r, size := utf8.DecodeRuneInString(key[i:])
		if keepRune(r) && !(r == utf8.RuneError && size == 1) {
			b.WriteString(key[i : i+size])
			i += size
			continue
		}
		for _, c := range []byte(key[i : i+size]) {
			fmt.Fprintf(&b, "%%%02X", c)
		}
		i += size
	}
	return b.String()
}

// keepRune reports whether r may appear as itself in a node name: ZooKeeper
// rejects control characters, U+007F–U+009F, U+D800–U+F8FF, U+FFF0–U+FFFF and
// (as Java strings hold them as surrogate pairs) everything above U+FFFF.
func keepRune(r rune) bool {
	switch {
	case r >= 0x20 && r <= 0x7e:
		return r != '/' && r != '%'
	case r >= 0xa0 && r <= 0xd7ff:
		return true
	case r >= 0xf900 && r <= 0xffef:
		return true
	}
	return false
}

// cleanBase validates a base path: absolute, no empty, "." or ".."
// segments, no characters ZooKeeper rejects. "" means DefaultBase; "/" is
// the root.
func cleanBase(base string) (string, error) {
	if base == "" {
		return DefaultBase, nil
	}
	if base == "/" {
		return "/", nil
	}
	if !strings.HasPrefix(base, "/") {
		return "", fmt.Errorf("%w: zookeeper base path %q must start with /", driver.ErrInvalidOption, base)
	}
	base = strings.TrimSuffix(base, "/")
	for _, seg := range strings.Split(base[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("%w: zookeeper base path %q has an empty, \".\" or \"..\" segment", driver.ErrInvalidOption, base)
		}
		for _, r := range seg {
			if !keepRune(r) && r != '%' {
				return "", fmt.Errorf("%w: zookeeper base path %q has a character ZooKeeper rejects (%U)", driver.ErrInvalidOption, base, r)
			}
		}
		if !utf8.ValidString(seg) {
			return "", fmt.Errorf("%w: zookeeper base path %q is not valid UTF-8", driver.ErrInvalidOption, base)
		}
	}
	if base == "/zookeeper" || strings.HasPrefix(base, "/zookeeper/") {
		return "", fmt.Errorf("%w: zookeeper base path %q is inside the reserved /zookeeper tree", driver.ErrInvalidOption, base)
	}
	return base, nil
}
