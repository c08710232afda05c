package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock"
)

func TestDurationValue(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"10s", 10 * time.Second, false},
		{"1m30s", 90 * time.Second, false},
		{"250ms", 250 * time.Millisecond, false},
		{"10", 10 * time.Second, false},
		{"0.5", 500 * time.Millisecond, false},
		{"0", 0, false},
		{"-1s", 0, true},
		{"-3", 0, true},
		{"soon", 0, true},
		{"1e300", 0, true},
	}
	for _, tt := range tests {
		var d time.Duration
		err := durationValue{&d}.Set(tt.in)
		if (err != nil) != tt.wantErr || d != tt.want {
			t.Errorf("Set(%q): got %v, %v; want %v, error %v", tt.in, d, err, tt.want, tt.wantErr)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"redis://127.0.0.1:6379", "redis://127.0.0.1:6379"},
		{"redis://user:pw@host:1/0", "redis://user:xxxxx@host:1/0"},
		{"postgres://h/db?password=pw&sslmode=disable", "postgres://h/db?password=xxxxx&sslmode=disable"},
		{"mysql://h/db?auth_token=pw", "mysql://h/db?auth_token=xxxxx"},
		{"sqlite:///var/lib/x.db", "sqlite:///var/lib/x.db"},
		{"::bad", "(invalid URL)"},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want {
			t.Errorf("redact(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatStatus(t *testing.T) {
	tests := []struct {
		name string
		in   dlock.Info
		want string
	}{
		{"free, never granted", dlock.Info{Key: "k", Waiters: -1}, "key:     k\nstate:   free\n"},
		{"free", dlock.Info{Key: "k", Fence: 4, Waiters: -1}, "key:     k\nstate:   free\nfence:   4 (last granted)\n"},
		{"held", dlock.Info{Key: "k", Held: true, Fence: 5, TTL: 2345 * time.Millisecond, Metadata: "host=a pid=1", Waiters: 2},
			"key:     k\nstate:   held\nholder:  host=a pid=1\nfence:   5\nexpires: in 2.3s unless refreshed\nwaiters: 2\n"},
		{"control characters", dlock.Info{Key: "a\nb", Held: true, Metadata: "x\ny", Waiters: -1},
			"key:     a\\nb\nstate:   held\nholder:  x\\ny\n"},
	}
	for _, tt := range tests {
		if got := formatStatus(tt.in, nil); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	tests := []struct {
		name string
		in   dlock.Info
		want string
	}{
		{"free, never granted", dlock.Info{Key: "k", Waiters: -1}, `{"key":"k","held":false}`},
		{"free", dlock.Info{Key: "k", Fence: 4, Waiters: 0}, `{"key":"k","held":false,"fence":4}`},
		{"held", dlock.Info{Key: "k", Held: true, Fence: 5, TTL: 2345 * time.Millisecond, Metadata: "host=a pid=1", Waiters: 2},
			`{"key":"k","held":true,"fence":5,"expires_in_ms":2345,"holder":"host=a pid=1","waiters":2}`},
		{"held, no queue", dlock.Info{Key: "a\nb", Held: true, Fence: 1, Waiters: -1}, `{"key":"a\nb","held":true,"fence":1}`},
	}
	for _, tt := range tests {
		got, err := statusJSON(tt.in, nil)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: got %s, %v; want %s", tt.name, got, err, tt.want)
		}
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--help"}, 0, "dlock run [flags] KEY -- CMD"},
		{[]string{"help", "run"}, 0, "-grace"},
		{[]string{"run", "--help"}, 0, "DLOCK_FENCE"},
		{[]string{"status", "-h"}, 0, "Usage: dlock status"},
		{[]string{"demo", "coupons", "--help"}, 0, "-workers"},
		{[]string{"demo", "--help"}, 0, "-workers"},
		{[]string{"help", "demo"}, 0, "-coupons"},
		{[]string{"version"}, 0, "dlock "},
		{[]string{"help", "version"}, 0, "Usage: dlock version"},
		{[]string{"help", "help"}, 0, "Usage: dlock help"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := Main(tt.args, strings.NewReader(""), &stdout, &stderr)
		if code != tt.wantCode || !strings.Contains(stdout.String(), tt.want) {
			t.Errorf("dlock %q: got exit %d, stdout %q; want %d and %q", tt.args, code, stdout.String(), tt.wantCode, tt.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"help", "frobnicate"}, strings.NewReader(""), &stdout, &stderr); code != ExitUsage || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
		t.Errorf("help for an unknown command: got exit %d, stderr %q; want %d and one line", code, stderr.String(), ExitUsage)
	}
	if code := Main([]string{"frobnicate"}, strings.NewReader(""), &stdout, &stderr); code != ExitUsage {
		t.Errorf("unknown command: got exit %d, want %d", code, ExitUsage)
	}
}

func TestFormatStatusShared(t *testing.T) {
	in := dlock.Info{Key: "api", Held: true, Fence: 9, TTL: time.Second, Metadata: "b", Waiters: -1}
	h := &dlock.Holders{Key: "api", Limit: 3, WritersWaiting: 1, Holders: []dlock.Holder{
		{Shared: true, Fence: 8, TTL: 1500 * time.Millisecond, Metadata: "host=a pid=1"},
		{Shared: true, Fence: 9, TTL: time.Second, Metadata: "x\ny"},
	}}
	want := "key:     api\nstate:   held by 2 of 3 permits\n" +
		"holder:  host=a pid=1 (fence 8, expires in 1.5s)\nholder:  x\\ny (fence 9, expires in 1s)\n" +
		"waiting: 1 exclusive (new shared holders wait for them)\n"
	if got := formatStatus(in, h); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	h.Limit, h.WritersWaiting = 0, 0
	if got := formatStatus(in, h); !strings.Contains(got, "state:   held by 2 shared holders\n") || strings.Contains(got, "waiting") {
		t.Errorf("readers: got %q", got)
	}
	b, err := statusJSON(in, &dlock.Holders{Limit: 3, WritersWaiting: 1, Holders: h.Holders[:1]})
	wantJSON := `{"key":"api","held":true,"fence":9,"expires_in_ms":1000,"holder":"b","holders":[{"fence":8,"expires_in_ms":1500,"holder":"host=a pid=1"}],"limit":3,"exclusive_waiting":1}`
	if err != nil || string(b) != wantJSON {
		t.Errorf("statusJSON = %s, %v; want %s", b, err, wantJSON)
	}
}
