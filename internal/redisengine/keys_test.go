package redisengine

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dlock-go/dlock/driver"
)

// slotKeys are lock names that stress hash-tag handling: tags, empty tags,
// stray braces, braces in odd orders.
var slotKeys = []string{
	"job", "{job}", "{job}x", "x{job}", "x{job}y{z}", "{}", "{}{a}", "a{}", "{a}{b}",
	"{", "}", "}{", "a}b", "a}b{c}", "{a", "a{", "{{a}}", "{}}", "}{}", "{a}}", "{{}",
	"{ü}", "ключ{тег}", "🔒", "new\nline{\n}", "{\xff-not-a-key-but-bytes}", strings.Repeat("{", 50),
}

func TestCRC16(t *testing.T) {
	tests := []struct {
		in   string
		want uint16
	}{
		{"", 0},
		{"123456789", 0x31c3}, // the CRC-16/XMODEM check value
	}
	for _, tc := range tests {
		if got := crc16(tc.in); got != tc.want {
			t.Errorf("crc16(%q) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

func TestSlot(t *testing.T) {
	// Values from CLUSTER KEYSLOT on a real server.
	tests := []struct {
		key  string
		want int
	}{
		{"foo", 12182},
		{"bar", 5061},
		{"{user1000}.following", 3443},
		{"{user1000}.followers", 3443},
		{"user1000", 3443},
		{"foo{}{bar}", 8363},
		{"foo{{bar}}zap", 4015},
		{"foo{bar}{zap}", 5061},
	}
	for _, tc := range tests {
		if got := slot(tc.key); got != tc.want {
			t.Errorf("slot(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

func TestSlotTags(t *testing.T) {
	tags := slotTags()
	for s, tag := range tags {
		if tag == "" || strings.ContainsAny(tag, "{}") {
			t.Fatalf("slot %d: tag %q, want a non-empty tag without braces", s, tag)
		}
		if got := slot(tag); got != s {
			t.Fatalf("slot(%q) = %d, want %d", tag, got, s)
		}
	}
}

func TestCompanionKeys(t *testing.T) {
	for _, prefix := range []string{"", "dlock:", "{app}:", "a}b:", "x{y}z"} {
		ks, err := newKeyspace(prefix)
		if err != nil {
			t.Fatalf("newKeyspace(%q): %v", prefix, err)
		}
		seen := map[string]string{}
		for _, k := range slotKeys {
			lock, fence, info := ks.keys(k)
			if lock != prefix+k {
				t.Errorf("prefix %q: lock key of %q = %q, want %q", prefix, k, lock, prefix+k)
			}
			all := ks.allKeys(k)
			if all[kLock] != lock || all[kFence] != fence || all[kInfo] != info {
				t.Errorf("prefix %q key %q: allKeys %q disagrees with keys", prefix, k, all[:3])
			}
			for _, c := range all[1:] {
				if got, want := slot(c), slot(lock); got != want {
					t.Errorf("prefix %q key %q: companion %q in slot %d, lock in %d", prefix, k, c, got, want)
				}
				if !strings.HasPrefix(c, prefix) {
					t.Errorf("prefix %q key %q: companion %q outside the prefix", prefix, k, c)
				}
				if !strings.Contains(c, "\xff") {
					t.Errorf("companion %q has no 0xff marker", c)
				}
			}
			for _, c := range append(all, ks.channel(k)) {
				if other, dup := seen[c]; dup {
					t.Errorf("prefix %q: %q used for %q and %q", prefix, c, other, k)
				}
				seen[c] = k
			}
		}
	}
}

func TestPrefixValidation(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"", true},
		{"dlock:", true},
		{"{app}:", true},
		{"x{app}y{", true},
		{"a}b", true},
		{"{", false},
		{"a{", false},
		{"{}", false},
		{"{}{a}", false},
		{"bad\xff", false},
	}
	for _, tc := range tests {
		_, err := newKeyspace(tc.prefix)
		if tc.ok && err != nil {
			t.Errorf("newKeyspace(%q) = %v, want nil", tc.prefix, err)
		}
		if !tc.ok && !errors.Is(err, driver.ErrInvalidOption) {
			t.Errorf("newKeyspace(%q) = %v, want ErrInvalidOption", tc.prefix, err)
		}
	}
}

func TestMillis(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"10ms", 10}, {"10.000001ms", 11}, {"1s", 1000}, {"1500us", 2},
	}
	for _, tc := range tests {
		d, _ := time.ParseDuration(tc.in)
		if got := millis(d); got != tc.want {
			t.Errorf("millis(%s) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestInfoName: List finds a lock by its info key or the sinfo key of its
// shared grants, and by no other companion key, whatever the name holds.
func TestInfoName(t *testing.T) {
	for _, prefix := range []string{"", "dlock:", "{app}:"} {
		ks, err := newKeyspace(prefix)
		if err != nil {
			t.Fatalf("newKeyspace(%q): %v", prefix, err)
		}
		for _, k := range append([]string{"xinfo:y", "sinfo:", "info:"}, slotKeys...) {
			if !utf8.ValidString(k) {
				continue // not a lock name
			}
			all := ks.allKeys(k)
			for i, c := range all {
				name, ok := ks.infoName(c)
				want := i == kInfo || i == kSInfo
				if ok != want || ok && name != k {
					t.Errorf("prefix %q: infoName(%q) = %q, %v; want %v for key %q", prefix, c, name, ok, want, k)
				}
			}
		}
	}
}
