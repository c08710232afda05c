package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// runBound bounds a whole run; a full run takes under 10 minutes.
const runBound = 30 * time.Minute

// Config says what to run and for how long.
type Config struct {
	// Backends to run, by name (redis, redlock, etcd, zookeeper,
	// postgres); empty runs all.
	Backends []string
	// Only, when set, runs only the measurements whose name
	// ("scenario/backend/subject", e.g. "hotkey/redis/dlock (defaults)")
	// it matches.
	Only *regexp.Regexp

	// Uncontended is how long each subject locks and unlocks a free key.
	Uncontended time.Duration
	// Contenders are the numbers of contenders on the hot key; HotWindow
	// how long each count runs; Hold how long each holder keeps the key.
	Contenders []int
	HotWindow  time.Duration
	Hold       time.Duration
	// HeldKeys are the numbers of locks one client holds; HeldTTL their
	// lease (refreshed every HeldTTL/3); HeldWindow how long the traffic
	// and CPU are measured.
	HeldKeys   []int
	HeldTTL    time.Duration
	HeldWindow time.Duration

	// SemLimit is the semaphores' limit; SemUncontended how long a mutex
	// and a permit each take and give back a free key; SemContenders
	// contend for SemLimit permits for SemWindow, each holding one for Hold.
	SemLimit       int
	SemUncontended time.Duration
	SemContenders  int
	SemWindow      time.Duration
	// RWReaders readers (in a closed loop, holding RWReadHold) and
	// RWWriters writers (holding RWWriteHold, pausing RWWriterPause between
	// sections) share a key for RWWindow.
	RWReaders, RWWriters    int
	RWWindow                time.Duration
	RWReadHold, RWWriteHold time.Duration
	RWWriterPause           time.Duration

	// OutDir receives RESULTS.md and the plots; empty writes nothing.
	OutDir string
	// README, when not empty, is a file whose summary section (between
	// the dlockbench summary markers) the run replaces with its headline
	// table.
	README string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Mode names the configuration in the report ("full", "quick").
	Mode string
}

// Full is the configuration of the published results: under ten minutes on
// two cores.
func Full() Config {
	return Config{
		Mode:        "full",
		Uncontended: 2 * time.Second,
		Contenders:  []int{2, 4, 8, 16, 32},
		HotWindow:   1500 * time.Millisecond,
		Hold:        time.Millisecond,
		HeldKeys:    []int{1000, 10000},
		HeldTTL:     3 * time.Second,
		HeldWindow:  8 * time.Second,

		SemLimit:       4,
		SemUncontended: time.Second,
		SemContenders:  16,
		SemWindow:      1500 * time.Millisecond,
		RWReaders:      12,
		RWWriters:      2,
		RWWindow:       1500 * time.Millisecond,
		RWReadHold:     time.Millisecond,
		RWWriteHold:    time.Millisecond,
		RWWriterPause:  10 * time.Millisecond,
	}
}

// Quick is a smoke run: every scenario, tiny counts, seconds per backend.
func Quick() Config {
	return Config{
		Mode:        "quick",
		Uncontended: 150 * time.Millisecond,
		Contenders:  []int{2, 8},
		HotWindow:   250 * time.Millisecond,
		Hold:        time.Millisecond,
		HeldKeys:    []int{100},
		HeldTTL:     1500 * time.Millisecond, // etcd's minimum is 1 s
		HeldWindow:  time.Second,

		SemLimit:       4,
		SemUncontended: 150 * time.Millisecond,
		SemContenders:  16,
		SemWindow:      250 * time.Millisecond,
		RWReaders:      12,
		RWWriters:      2,
		RWWindow:       250 * time.Millisecond,
		RWReadHold:     time.Millisecond,
		RWWriteHold:    time.Millisecond,
		RWWriterPause:  10 * time.Millisecond,
	}
}

// uncontendedRounds is how many slices scenario 1 cuts each subject's time
// into, alternating between the subjects.
const uncontendedRounds = 4

// AllBackends lists the backends in the order they run.
var AllBackends = []string{"redis", "redlock", "etcd", "zookeeper", "postgres"}

var starters = map[string]func(context.Context, *serverT) (*backend, error){
	"redis":     newRedisBackend,
	"redlock":   newRedlockBackend,
	"etcd":      newEtcdBackend,
	"zookeeper": newZooKeeperBackend,
	"postgres":  newPostgresBackend,
}

// Results is everything one run measured.
type Results struct {
	Config   Config
	Started  time.Time
	Elapsed  time.Duration
	Machine  Machine
	Backends []*BackendResults
	// Skipped names backends whose servers are not installed, with why.
	Skipped []string
}

// BackendResults are the measurements on one backend.
type BackendResults struct {
	backend     *backend
	uncontended []*uncontendedResult
	hot         []*hotResult
	held        []*heldResult
	// semUnc: dlock's mutex and a semaphore's permit on a free key; sem:
	// the contended semaphore and the hand-written slots; rw: the
	// readers–writer workload on an RWMutex and on one mutex.
	semUnc []*uncontendedResult
	sem    []*hotResult
	rw     []*rwResult
}

// Machine describes where the run happened.
type Machine struct {
	CPUs       int
	CPUModel   string
	OS, Arch   string
	GoVersion  string
	LoadBefore string
	LoadAfter  string
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// Run starts each backend's servers in turn, runs the scenarios against
// them, stops them, and writes the report and plots to cfg.OutDir.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	// Every call of the run has this deadline, as calls of a service
	// usually have one (see also the dlock-nodeadline subject).
	ctx, cancel := context.WithTimeout(ctx, runBound)
	defer cancel()
	logw := cfg.Log
	if logw == nil {
		logw = io.Discard
	}
	logf := func(format string, args ...any) { fmt.Fprintf(logw, format+"\n", args...) }
	names := cfg.Backends
	if len(names) == 0 {
		names = AllBackends
	}
	for _, n := range names {
		if starters[n] == nil {
			return nil, fmt.Errorf("unknown backend %q (want one of %s)", n, strings.Join(AllBackends, ", "))
		}
	}
	res := &Results{
		Config:  cfg,
		Started: time.Now(),
		Machine: Machine{
			CPUs: runtime.NumCPU(), CPUModel: cpuModel(), OS: runtime.GOOS, Arch: runtime.GOARCH,
			GoVersion: runtime.Version(), LoadBefore: loadAvg(),
		},
	}
	want := func(name string) bool { return cfg.Only == nil || cfg.Only.MatchString(name) }
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t := newServerT("dlockbench-" + name)
		logf("== %s: starting servers", name)
		b, err := starters[name](ctx, t)
		if errors.Is(err, errSkipped) && !requireServers() {
			logf("== %s: skipped: %v", name, err)
			res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %v", name, err))
			t.close()
			continue
		}
		if err != nil {
			t.close()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		br := runBackend(ctx, cfg, b, want, logf)
		t.close()
		res.Backends = append(res.Backends, br)
	}
	res.Elapsed = time.Since(res.Started)
	res.Machine.LoadAfter = loadAvg()
	if cfg.OutDir != "" {
		if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
			return res, err
		}
		if err := writePlots(res, cfg.OutDir); err != nil {
			return res, fmt.Errorf("plots: %w", err)
		}
		if err := os.WriteFile(filepath.Join(cfg.OutDir, "RESULTS.md"), []byte(report(res)), 0o644); err != nil {
			return res, err
		}
	}
	if cfg.README != "" {
		if err := updateReadme(cfg.README, res); err != nil {
			return res, err
		}
	}
	return res, res.err()
}

// err reports the first measurement that failed.
func (r *Results) err() error {
	for _, b := range r.Backends {
		for _, u := range b.uncontended {
			if u.err != nil {
				return fmt.Errorf("uncontended/%s/%s: %w", b.backend.name, u.subject.label(), u.err)
			}
		}
		for _, h := range b.hot {
			if h.err != nil {
				return fmt.Errorf("hotkey/%s/%s/%d: %w", b.backend.name, h.subject.label(), h.contenders, h.err)
			}
		}
		for _, h := range b.held {
			if h.err != nil {
				return fmt.Errorf("held/%s/%s/%d: %w", b.backend.name, h.subject.label(), h.keys, h.err)
			}
		}
		for _, u := range b.semUnc {
			if u.err != nil {
				return fmt.Errorf("sem-uncontended/%s/%s: %w", b.backend.name, u.subject.label(), u.err)
			}
		}
		for _, h := range b.sem {
			if h.err != nil {
				return fmt.Errorf("semaphore/%s/%s: %w", b.backend.name, h.subject.label(), h.err)
			}
		}
		for _, h := range b.rw {
			if h.err != nil {
				return fmt.Errorf("rwlock/%s/%s: %w", b.backend.name, h.subject.label(), h.err)
			}
		}
	}
	return nil
}

func runBackend(ctx context.Context, cfg Config, b *backend, want func(string) bool, logf func(string, ...any)) *BackendResults {
	br := &BackendResults{backend: b}
	logf("== %s: %s", b.name, b.version)
	var unc []*subject
	for _, s := range b.subjects {
		if s.uncontended && want("uncontended/"+b.name+"/"+s.label()) {
			unc = append(unc, s)
		}
	}
	if len(unc) > 0 {
		br.uncontended = runUncontended(ctx, b, unc, "bench-u", cfg.Uncontended, uncontendedRounds)
		for _, r := range br.uncontended {
			logf("%-70s %8.0f ops/s  p50 %v  p99 %v  %.1f cmds/op  %.1f rt/op%s", "uncontended/"+b.name+"/"+r.subject.label(),
				r.opsPerSec(), r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.serverPerOp, r.rtPerOp, errNote(r.err))
		}
	}
	for _, n := range cfg.Contenders {
		for i, s := range b.subjects {
			name := "hotkey/" + b.name + "/" + s.label()
			if !s.hotKey || !want(name) {
				continue
			}
			r := runHotKey(ctx, b, s, fmt.Sprintf("bench-h%d-%d", i, n), n, cfg.HotWindow, cfg.Hold)
			br.hot = append(br.hot, r)
			logf("%-62s %3d  %5.0f cs/s  %5.0f hand-offs/s  p50 %v p99 %v max %v  fair %d/%d  %.1f cmds/acq  %.1f rt/acq  give-ups %d%s",
				name, n, r.perSec(), r.handoffsPerSec(), r.handoffP50.Round(time.Microsecond), r.handoffP99.Round(time.Microsecond),
				r.handoffMax.Round(time.Microsecond), r.fairMax, r.fairMin, r.serverPerAcq, r.rtPerAcq, r.giveUps, errNote(r.err))
		}
	}
	for i, s := range b.subjects {
		name := "held/" + b.name + "/" + s.label()
		if s.hold == nil || !want(name) {
			continue
		}
		for _, n := range cfg.HeldKeys {
			r := runHeld(ctx, b, s, fmt.Sprintf("bench-k%d-%d", i, n), n, cfg.HeldTTL, cfg.HeldWindow)
			br.held = append(br.held, r)
			logf("%-62s %6d  %8.0f cmds/s  %8.0f rt/s (one per lock per TTL/3: %.0f)  CPU %.0f%%  lost %d  acquire %v%s",
				name, n, r.serverPerSec, r.rtPerSec, r.naivePerSec(), r.cpu*100, r.lost, r.acquire.Round(time.Millisecond), errNote(r.err))
		}
	}
	if b.family != nil {
		runFamily(ctx, cfg, b, br, want, logf)
	}
	return br
}

// runFamily runs the semaphore and readers–writer scenarios on b.
func runFamily(ctx context.Context, cfg Config, b *backend, br *BackendResults, want func(string) bool, logf func(string, ...any)) {
	var unc []*subject
	for _, s := range semUncontendedSubjects(b, cfg.SemLimit) {
		if want("sem-uncontended/" + b.name + "/" + s.label()) {
			unc = append(unc, s)
		}
	}
	if len(unc) > 0 {
		br.semUnc = runUncontended(ctx, b, unc, "bench-su", cfg.SemUncontended, uncontendedRounds)
		for _, r := range br.semUnc {
			logf("%-70s %8.0f ops/s  p50 %v  p99 %v  %.1f cmds/op  %.1f rt/op%s", "sem-uncontended/"+b.name+"/"+r.subject.label(),
				r.opsPerSec(), r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.serverPerOp, r.rtPerOp, errNote(r.err))
		}
	}
	for i, s := range semSubjects(b, cfg.SemLimit) {
		name := "semaphore/" + b.name + "/" + s.label()
		if !want(name) {
			continue
		}
		r := runSemaphore(ctx, b, s, fmt.Sprintf("bench-s%d", i), cfg.SemLimit, cfg.SemContenders, cfg.SemWindow, cfg.Hold)
		br.sem = append(br.sem, r)
		logf("%-62s %d/%d  %5.0f cs/s  %5.0f hand-offs/s  p50 %v p99 %v max %v  fair %d/%d  peak %d  %.1f cmds/acq  %.1f rt/acq  give-ups %d%s",
			name, cfg.SemContenders, cfg.SemLimit, r.perSec(), r.handoffsPerSec(), r.handoffP50.Round(time.Microsecond), r.handoffP99.Round(time.Microsecond),
			r.handoffMax.Round(time.Microsecond), r.fairMax, r.fairMin, r.peak, r.serverPerAcq, r.rtPerAcq, r.giveUps, errNote(r.err))
	}
	for i, s := range rwSubjects(b, cfg.RWReaders) {
		name := "rwlock/" + b.name + "/" + s.label()
		if !want(name) {
			continue
		}
		r := runRW(ctx, b, s, fmt.Sprintf("bench-rw%d", i), cfg.RWReaders, cfg.RWWriters, cfg.RWWindow, cfg.RWReadHold, cfg.RWWriteHold, cfg.RWWriterPause)
		br.rw = append(br.rw, r)
		logf("%-62s %d+%d  reads %5.0f/s  writes %4.0f/s  writer wait p50 %v p99 %v  reader wait p50 %v p99 %v  peak readers %d  %.1f cmds/section  %.1f rt/section%s",
			name, cfg.RWReaders, cfg.RWWriters, r.readsPerSec(), r.writesPerSec(), r.writerP50.Round(time.Microsecond), r.writerP99.Round(time.Microsecond),
			r.readerP50.Round(time.Microsecond), r.readerP99.Round(time.Microsecond), r.peakReaders, r.serverPerOp, r.rtPerOp, errNote(r.err))
	}
}

func errNote(err error) string {
	if err == nil {
		return ""
	}
	return "  ERROR: " + err.Error()
}
