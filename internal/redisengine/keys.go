package redisengine

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/dlock-go/dlock/driver"
)

// Key layout. For a lock key K and prefix P:
//
//	P + K                               the lock: a string holding the owner token, with PX expiry
//	P + "\xff{" + h + "}fence:" + K     the last fence granted for K (long expiry)
//	P + "\xff{" + h + "}info:" + K      the holder's fence, token and metadata (same expiry as the lock)
//	P + "\xff{" + h + "}queue:" + K     the waiting clients, in arrival order (sorted set)
//	P + "\xff{" + h + "}waits:" + K     the waiting clients' deadlines (sorted set)
//	P + "\xff{" + h + "}shares:" + K    the shared grants' tokens by the end of their lease (sorted set)
//	P + "\xff{" + h + "}sinfo:" + K     the shared grants' fences and metadata, by token (hash)
//	P + "\xff{" + h + "}slimit:" + K    the limit the shared grants were taken with
//	P + "\xff{" + h + "}writers:" + K   the waiting writers' tokens by the end of their record (sorted set)
//	P + "\xffreleased:" + K             the pub/sub channel announcing releases of K
//
// h is a hash tag that puts the companion keys in the lock key's Redis
// Cluster slot: the lock key's own hash tag when it has one, otherwise a
// short tag chosen (from a table) to hash to the same slot. Byte 0xff never
// occurs in valid UTF-8, and keys and the prefix are valid UTF-8, so no
// companion key or channel can equal a lock key, and the layout is
// injective: K is what follows the first "}" and kind ("fence:", "info:",
// "queue:", "waits:", "shares:", "sinfo:", "slimit:" or "writers:") after
// the prefix (h contains no '}'). A key never given a shared grant has no
// shares, sinfo, slimit or writers key: the four exist only while shared
// grants or waiting writers do, and expire with the last of them.
//
// A prefix must be valid UTF-8. If it contains '{', its first '{' must open a
// non-empty hash tag closed inside the prefix; then every key of the prefix
// lives in that tag's slot, and the companion keys with it.

const (
	kindFence = "fence:"
	kindInfo  = "info:"
	kindQueue = "queue:"
	kindWaits = "waits:"
	// The shared grants (see lua/grants.lua).
	kindShares  = "shares:"
	kindSInfo   = "sinfo:"
	kindSLimit  = "slimit:"
	kindWriters = "writers:"
	numSlots    = 16384
)

type keyspace struct {
	prefix string
}

func newKeyspace(prefix string) (keyspace, error) {
	if !utf8.ValidString(prefix) {
		return keyspace{}, fmt.Errorf("%w: redis prefix is not valid UTF-8", driver.ErrInvalidOption)
	}
	if i := strings.IndexByte(prefix, '{'); i >= 0 {
		if j := strings.IndexByte(prefix[i+1:], '}'); j <= 0 {
			return keyspace{}, fmt.Errorf("%w: redis prefix %q: a '{' in the prefix must open a non-empty hash tag closed in the prefix, like \"{app}:\"", driver.ErrInvalidOption, prefix)
		}
	}
	return keyspace{prefix: prefix}, nil
}

// lock returns the Redis key of the lock itself.
func (ks keyspace) lock(key string) string { return ks.prefix + key }

// tag returns the hash tag of key's companion keys.
func (ks keyspace) tag(key string) string {
	l := ks.prefix + key
	h, ok := hashTag(l)
	if !ok {
		h = slotTag(slot(l))
	}
	return h
}

// keys returns the lock key, the fence counter key and the info key.
func (ks keyspace) keys(key string) (lock, fence, info string) {
	c := ks.prefix + "\xff{" + ks.tag(key) + "}"
	return ks.lock(key), c + kindFence + key, c + kindInfo + key
}

// allKeys returns the lock key and its eight companions, indexed by the
// k* constants: fence counter, info, waiting queue, waiters' deadlines,
// shares, sinfo, slimit and writers.
func (ks keyspace) allKeys(key string) []string {
	c := ks.prefix + "\xff{" + ks.tag(key) + "}"
	return []string{ks.lock(key), c + kindFence + key, c + kindInfo + key, c + kindQueue + key, c + kindWaits + key,
		c + kindShares + key, c + kindSInfo + key, c + kindSLimit + key, c + kindWriters + key}
}

// Indexes of allKeys.
const (
	kLock = iota
	kFence
	kInfo
	kQueue
	kWaits
	kShares
	kSInfo
	kSLimit
	kWriters
)

// pick returns the keys of all at the indexes idx.
func pick(all []string, idx ...int) []string {
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = all[j]
	}
	return out
}

// inspectKeys returns the keys of inspect.lua for key.
func (ks keyspace) inspectKeys(key string) []string {
	return pick(ks.allKeys(key), kLock, kInfo, kFence, kWaits, kShares, kSInfo)
}

// refreshKeys returns the keys of refresh.lua for key.
func (ks keyspace) refreshKeys(key string) []string {
	return pick(ks.allKeys(key), kLock, kInfo, kShares, kSInfo, kSLimit)
}

// channel returns the pub/sub channel announcing releases of key.
func (ks keyspace) channel(key string) string { return ks.prefix + "\xffreleased:" + key }

// hashTag returns what Redis Cluster hashes for key when the key has a hash
// tag: the text between the first '{' and the first '}' after it, if that is
// not empty.
func hashTag(key string) (string, bool) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return "", false
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return "", false
	}
	return key[i+1 : i+1+j], true
}

// slot returns the Redis Cluster hash slot of key.
func slot(key string) int {
	if tag, ok := hashTag(key); ok {
		key = tag
	}
	return int(crc16(key) % numSlots)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum
// Redis Cluster uses for key slots.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^s[i]]
	}
	return crc
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for b := 0; b < 8; b++ {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

const tagAlphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// slotTags maps every slot to the first string over tagAlphabet (shortest
// first) that hashes to it. It is built on first use, in about a millisecond.
var slotTags = sync.OnceValue(func() *[numSlots]string {
	var t [numSlots]string
	left := numSlots
	var walk func(prefix []byte, n int)
	walk = func(prefix []byte, n int) {
		if n == 0 {
			s := string(prefix)
			if sl := crc16(s) % numSlots; t[sl] == "" {
				t[sl] = s
				left--
			}
			return
		}
		for i := 0; i < len(tagAlphabet) && left > 0; i++ {
			walk(append(prefix, tagAlphabet[i]), n-1)
		}
	}
	for n := 1; left > 0; n++ {
		walk(make([]byte, 0, n), n)
	}
	return &t
})

// slotTag returns a short hash tag of slot s.
func slotTag(s int) string { return slotTags()[s] }
