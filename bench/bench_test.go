package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuick runs the quick mode end to end against real servers: every
// backend whose server is installed, every scenario, the report and the
// plots. A missing server skips its backend (and fails the test with
// DLOCK_TEST_REQUIRE_SERVERS=1).
func TestQuick(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cfg := Quick()
	cfg.OutDir = t.TempDir()
	cfg.README = filepath.Join(t.TempDir(), "README.md")
	readme := "# Title\n\n" + summaryStart + "\nold\n" + summaryEnd + "\n\nrest\n"
	if err := os.WriteFile(cfg.README, []byte(readme), 0o644); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		cfg.Log = os.Stderr
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res.Backends) == 0 {
		t.Skipf("no server installed: %v", res.Skipped)
	}
	for _, b := range res.Backends {
		if got := len(b.uncontended); got == 0 {
			t.Errorf("%s: no uncontended result", b.backend.name)
		}
		for _, h := range b.hot {
			if h.overlaps != 0 {
				t.Errorf("%s/%s/%d: got %d overlapping grants, want 0", b.backend.name, h.subject.label(), h.contenders, h.overlaps)
			}
		}
		for _, h := range b.held {
			if h.subject.role == roleDlock && h.lost != 0 {
				t.Errorf("%s/%s/%d: got %d locks lost, want 0", b.backend.name, h.subject.label(), h.keys, h.lost)
			}
		}
		if b.backend.family == nil {
			continue
		}
		if len(b.semUnc) != 2 || len(b.sem) != 2 || len(b.rw) != 2 {
			t.Errorf("%s: got %d/%d/%d results of the semaphore and RW scenarios, want 2/2/2", b.backend.name, len(b.semUnc), len(b.sem), len(b.rw))
		}
		for _, h := range b.sem {
			if h.peak < 1 || h.peak > h.limit || h.overlaps != 0 {
				t.Errorf("semaphore/%s/%s: peak %d holders, %d grants over the limit, want 1..%d and 0", b.backend.name, h.subject.label(), h.peak, h.overlaps, h.limit)
			}
		}
		for _, x := range b.rw {
			if x.violations != 0 {
				t.Errorf("rwlock/%s/%s: got %d grants with a writer and someone else, want 0", b.backend.name, x.subject.label(), x.violations)
			}
			if x.subject.id == idOneMutex && x.peakReaders > 1 {
				t.Errorf("rwlock/%s/%s: got %d readers at once on a mutex, want 1", b.backend.name, x.subject.label(), x.peakReaders)
			}
		}
	}
	md, err := os.ReadFile(filepath.Join(cfg.OutDir, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Summary", "## Targets", "## 1. Uncontended", "## 2. Hot key", "## 3. Many locks",
		"## 4. Semaphore, uncontended", "## 5. Semaphore, contended", "## 6. Readers–writer lock"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("RESULTS.md lacks %q", want)
		}
	}
	// The README's summary: replaced between the markers, the rest kept,
	// a row for every peer of every backend that ran.
	rb, err := os.ReadFile(cfg.README)
	if err != nil {
		t.Fatal(err)
	}
	got := string(rb)
	if strings.Contains(got, "\nold\n") || !strings.HasPrefix(got, "# Title\n\n"+summaryStart) || !strings.HasSuffix(got, summaryEnd+"\n\nrest\n") {
		t.Errorf("README after the run:\n%s", got)
	}
	for _, b := range res.Backends {
		for _, s := range b.backend.subjects {
			if s.role == rolePeer && !strings.Contains(got, "| "+b.backend.name+" | "+s.label()+" |") {
				t.Errorf("README summary lacks %s / %s", b.backend.name, s.label())
			}
		}
	}
	for _, want := range []string{"\n- Semaphore, 4 permits, 16 contenders: ", "\n- RWMutex, 12 readers and 2 writers: "} {
		if !strings.Contains(got, want) {
			t.Errorf("README summary lacks %q", want)
		}
	}
	for _, b := range res.Backends {
		if len(b.hot) == 0 {
			continue
		}
		for _, kind := range []string{"throughput", "handoffs", "handoff"} {
			name := "hotkey-" + kind + "-" + b.backend.name + ".png"
			st, err := os.Stat(filepath.Join(cfg.OutDir, name))
			if err != nil {
				t.Errorf("plot: %v", err)
				continue
			}
			if st.Size() < 1000 {
				t.Errorf("%s: got %d bytes, want a picture", name, st.Size())
			}
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{fmtInt(0), "0"},
		{fmtInt(999), "999"},
		{fmtInt(1000), "1,000"},
		{fmtInt(1234567), "1,234,567"},
		{fmtRate(9.94), "9.9"},
		{fmtRate(812.4), "812"},
		{fmtRate(10000), "10,000"},
		{fmtDur(88 * time.Microsecond), "88 µs"},
		{fmtDur(1500 * time.Microsecond), "1.50 ms"},
		{fmtDur(93 * time.Millisecond), "93.0 ms"},
		{fmtDur(2 * time.Second), "2.00 s"},
		{fmtCount(-1), "n/a"},
		{fmtReq(2, 11), "2.0 · 11.0"},
		{fmtReq(-1, 3), "3.0"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0, 1}, {0.5, 6}, {0.99, 10}, {1, 10},
	}
	for _, tt := range tests {
		if got := percentile(ds, tt.q); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}
