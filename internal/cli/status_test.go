//go:build unix

package cli

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	r := e.run(20*time.Second, "status", "job")
	if r.code != ExitFree || !strings.Contains(r.stdout, "state:   free") {
		t.Fatalf("status of a new key: got exit %d, stdout %q, stderr %q; want %d and free", r.code, r.stdout, r.stderr, ExitFree)
	}

	// The command asks for the status of the lock it runs under.
	r = e.run(20*time.Second, "run", "--ttl", "20s", "job", "--", dlockBin, "status", "job")
	if r.code != 0 {
		t.Fatalf("status under the lock: got exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"key:     job\n", "state:   held\n", "holder:  host=", "cmd=dlock", "fence:   1\n", "expires: in "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status while held: got %q, want it to contain %q", r.stdout, want)
		}
	}

	r = e.run(20*time.Second, "status", "job")
	if r.code != ExitFree || !strings.Contains(r.stdout, "state:   free") || !strings.Contains(r.stdout, "fence:   1 (last granted)") {
		t.Errorf("status after release: got exit %d, stdout %q; want %d, free, last fence 1", r.code, r.stdout, ExitFree)
	}
}

func TestBadBackend(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name    string
		url     string
		want    int
		mention string
	}{
		{"unknown scheme", "nosuch://u:secret@host", ExitUsage, `"nosuch"`},
		{"unknown parameter", "sqlite://" + e.path("x.db") + "?bogus=1", ExitUsage, "bogus"},
		{"password in a bad URL", "mem://u:secret@x", ExitUsage, "mem"},
		{"unparsable with password", "redis://u:se/cret@host", ExitUsage, "not valid"},
		{"no password, bad port", "postgres://u:@host:port/db", ExitUsage, "port"},
		{"no colon after the scheme", "redis//u:secret@127.0.0.1:1/0", ExitUsage, "redis"},
		{"redis, one slash", "redis:/app:secret@host/0", ExitUsage, "redis"},
		{"postgres, no slashes", "postgres:app:secret@host/db", ExitUsage, "postgres"},
		{"mysql, one slash", "mysql:/app:secret@host/db", ExitUsage, "mysql"},
		{"etcd, one slash", "etcd:/app:secret@host", ExitUsage, "etcd"},
		{"redis, no host", "redis:app:secret@host/0", ExitUsage, "redis"},
		{"no scheme", "just-a-path", ExitUsage, "scheme"},
		{"unusable file", "sqlite:///proc/nonexistent/locks.db", ExitUnavailable, "sqlite"},
	}
	for _, tt := range tests {
		for _, cmd := range [][]string{{"status", "k"}, {"run", "--try", "k", "--", "true"}} {
			t.Run(tt.name+"/"+cmd[0], func(t *testing.T) {
				args := append([]string{cmd[0], "--backend", tt.url}, cmd[1:]...)
				r := e.run(20*time.Second, args...)
				if r.code != tt.want {
					t.Errorf("got exit %d, want %d (stderr %q)", r.code, tt.want, r.stderr)
				}
				got := lines(r.stderr)
				if len(got) != 1 || !strings.HasPrefix(got[0], "dlock: ") || !strings.Contains(got[0], tt.mention) {
					t.Errorf("stderr: got %q, want one line starting with \"dlock: \" that mentions %q", r.stderr, tt.mention)
				}
				if strings.Contains(r.stderr, "secret") || strings.Contains(r.stderr, "cret") {
					t.Errorf("stderr shows the password: %q", r.stderr)
				}
				if strings.Contains(r.stderr, "special characters") && !strings.Contains(tt.url, "cret") {
					t.Errorf("stderr blames special characters in a password the URL does not have: %q", r.stderr)
				}
			})
		}
	}
}

// A backend that is down, or accepts connections and never answers, ends
// the command with one line and ExitUnavailable within the connect timeout.
func TestUnreachableBackend(t *testing.T) {
	t.Parallel()
	if !slices.Contains(dlock.Schemes(), "redis") {
		t.Skip("no network backend registered")
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // hold it open, never answer
		}
	}()

	e := newEnv(t)
	for _, tt := range []struct{ name, url string }{
		{"refused", "redis://u:secret@" + refused},
		{"silent", "redis://u:secret@" + silent.Addr().String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.run(20*time.Second, "status", "--connect-timeout", "500ms", "--backend", tt.url, "k")
			if r.code != ExitUnavailable {
				t.Errorf("got exit %d, want %d (stderr %q)", r.code, ExitUnavailable, r.stderr)
			}
			if got := lines(r.stderr); len(got) != 1 || !strings.HasPrefix(got[0], "dlock: ") || strings.Contains(got[0], "secret") {
				t.Errorf("stderr: got %q, want one line starting with \"dlock: \", without the password", r.stderr)
			}
			// A correctness deadline for the 500ms connect timeout, not a benchmark.
			if r.took > 5*time.Second {
				t.Errorf("took %v, want about the 500ms connect timeout", r.took)
			}
		})
	}
}

func TestDriversRegistered(t *testing.T) {
	for _, want := range []string{"mem", "sqlite"} {
		if !slices.Contains(dlock.Schemes(), want) {
			t.Errorf("scheme %q not registered; registered: %v", want, dlock.Schemes())
		}
	}
}
