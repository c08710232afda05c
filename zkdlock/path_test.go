package zkdlock

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/driver"
)

func TestPath(t *testing.T) {
	tests := []struct {
		base, key, want string
	}{
		{"/locks", "K", "/locks/K"},
		{"/locks/", "orders-42", "/locks/orders-42"},
		{"/locks", "a/b", "/locks/a%2Fb"},
		{"/locks", "a%2Fb", "/locks/a%252Fb"},
		{"/locks", "..", "/locks/%2E%2E"},
		{"/locks", ".", "/locks/%2E"},
		{"/locks", "...", "/locks/..."},
		{"/locks", "../x", "/locks/..%2Fx"},
		{"/locks", "new\nline", "/locks/new%0Aline"},
		{"/locks", "tab\tsp ace", "/locks/tab%09sp ace"},
		{"/locks", "ключ-鍵", "/locks/ключ-鍵"},
		{"/locks", "🔒", "/locks/%F0%9F%94%92"},
		{"/locks", "\u00a0\u009f", "/locks/\u00a0%C2%9F"},
		{"/locks", "\uf000", "/locks/%EF%80%80"},
		{"/", "k", "/k"},
		{"/", "zookeeper", "/%7Aookeeper"},
		{"/x", "zookeeper", "/x/zookeeper"},
	}
	for _, tc := range tests {
		if got := Path(tc.base, tc.key); got != tc.want {
			t.Errorf("Path(%q, %q) = %q, want %q", tc.base, tc.key, got, tc.want)
		}
	}
}

// TestEncodeKeyInjective checks that distinct keys get distinct node names
// that stay one level below the base and pass ZooKeeper's name rules.
func TestEncodeKeyInjective(t *testing.T) {
	keys := []string{
		"a/b", "a%2Fb", "a%252Fb", "%", "%25", ".", "..", "%2E", "%2E%2E", "...", "a", "A",
		"x", "x/", "/x", "//", "/", "a//b", "k", "k ", "a\nb", "a b", "🔒", "%F0%9F%94%92",
		"zookeeper", "\x7f", "%7F", "\u00ff", "\ufff0", "\uffef",
		strings.Repeat("k", dlock.MaxKeyLen), strings.Repeat("/", dlock.MaxKeyLen),
	}
	seen := map[string]string{}
	for _, k := range keys {
		name := encodeKey(k)
		if prev, dup := seen[name]; dup {
			t.Errorf("keys %q and %q both encode to %q", prev, k, name)
		}
		seen[name] = k
		if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
			t.Errorf("encodeKey(%q) = %q: not a single child name", k, name)
		}
		for _, r := range name {
			if !keepRune(r) && r != '%' {
				t.Errorf("encodeKey(%q) = %q holds %U, which ZooKeeper rejects", k, name, r)
			}
		}
		if got := decodeForTest(name); got != k {
			t.Errorf("decoding encodeKey(%q) = %q, want the key back", k, got)
		}
	}
}

// decodeForTest inverts encodeKey, showing it is injective.
func decodeForTest(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			var v byte
			for _, c := range []byte(s[i+1 : i+3]) {
				v <<= 4
				switch {
				case c >= '0' && c <= '9':
					v |= c - '0'
				case c >= 'A' && c <= 'F':
					v |= c - 'A' + 10
				}
			}
			b = append(b, v)
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

func TestCleanBase(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", DefaultBase, true},
		{"/", "/", true},
		{"/locks", "/locks", true},
		{"/locks/", "/locks", true},
		{"/a/b/c", "/a/b/c", true},
		{"locks", "", false},
		{"/a//b", "", false},
		{"/a/../b", "", false},
		{"/a/./b", "", false},
		{"/zookeeper", "", false},
		{"/zookeeper/x", "", false},
		{"/a\nb", "", false},
	}
	for _, tc := range tests {
		got, err := cleanBase(tc.in)
		switch {
		case tc.ok && (err != nil || got != tc.want):
			t.Errorf("cleanBase(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		case !tc.ok && !errors.Is(err, driver.ErrInvalidOption):
			t.Errorf("cleanBase(%q) = %q, %v; want ErrInvalidOption", tc.in, got, err)
		}
	}
}

func TestData(t *testing.T) {
	b := encodeData("tok", 1500*time.Millisecond, "host=a pid=1\nmore")
	ttl, meta, ok := decodeData(b)
	if !ok || ttl.Milliseconds() != 1500 || meta != "host=a pid=1\nmore" {
		t.Errorf("decodeData(encodeData) = %v, %q, %v; want 1.5s, the metadata, true", ttl, meta, ok)
	}
	if strings.Contains(string(b), "tok") {
		t.Errorf("node data %q holds the token", b)
	}
	for _, foreign := range []string{"", "10.0.0.1", "dlock1 x\n", "dlock1 a b\nm"} {
		if _, meta, ok := decodeData([]byte(foreign)); ok || meta != foreign {
			t.Errorf("decodeData(%q) = %q, %v; want the data as metadata, false", foreign, meta, ok)
		}
	}
}
