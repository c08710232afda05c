package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// report renders the results as Markdown (docs/bench/RESULTS.md).
func report(r *Results) string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	cfg := r.Config
	p("# Benchmark results\n\n")
	p("dlock beside the lock libraries users would pick instead, on the same\n")
	p("servers, in **one run** of `dlockbench` (%s mode, %s). Method, settings and\n", cfg.Mode, r.Started.UTC().Format("2006-01-02"))
	p("how to run: [../benchmarks.md](../benchmarks.md). All numbers on this page come\n")
	p("from that one run; compare them as ratios within the run, not with other\n")
	p("machines.\n\n")
	m := r.Machine
	p("- Machine: %d CPUs (%s), %s/%s, %s; load average %s before, %s after;\n", m.CPUs, m.CPUModel, m.OS, m.Arch, m.GoVersion, m.LoadBefore, m.LoadAfter)
	p("  the machine was shared with other work, so absolute numbers are noisy.\n")
	var versions []string
	for _, b := range r.Backends {
		versions = append(versions, b.backend.version)
	}
	p("- Servers (started by the program on loopback, no persistence or fsync): %s.\n", strings.Join(versions, "; "))
	p("- Run time: %v. Uncontended: %v per subject in %d alternating slices. Hot key: %v per point, holds of %v. Held locks: TTL %v (refresh every %v), traffic measured over %v.\n",
		r.Elapsed.Round(time.Second), cfg.Uncontended, uncontendedRounds, cfg.HotWindow, cfg.Hold, cfg.HeldTTL, cfg.HeldTTL/3, cfg.HeldWindow)
	for _, s := range r.Skipped {
		p("- Skipped: %s\n", s)
	}
	p("\n")

	p("## Summary\n\n")
	p("dlock's value divided by each peer's (above 1: dlock is ahead), and the refresh\n")
	p("traffic of 10,000 held locks side by side.\n\n")
	p("%s\n", summary(r))

	p("## Targets\n\n")
	p("| target | measured | met |\n| --- | --- | --- |\n")
	for _, t := range targets(r) {
		p("| %s | %s | %s |\n", t.what, t.measured, t.met)
	}
	p("\n")

	p("## 1. Uncontended: lock + unlock of a free key, one client\n\n")
	p("Requests are round trips the client sent (Redis: counted by a go-redis hook; etcd and\n")
	p("ZooKeeper: counted by the server; PostgreSQL: statements, counted by a pgx tracer).\n")
	p("Redis also shows the commands the server ran, including those inside scripts.\n")
	p("The last column is dlock's rate divided by the row's (above 1: dlock is faster).\n\n")
	p("| backend | subject | setting | lock+unlock/s | p50 | p99 | requests/op | server cmds/op | dlock ÷ this |\n")
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, b := range r.Backends {
		ref := b.findUnc("dlock")
		for _, u := range b.uncontended {
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", b.backend.name, u.subject.name, u.subject.setting,
				cell(u.err, fmtRate(u.opsPerSec())), cell(u.err, fmtDur(u.p50)), cell(u.err, fmtDur(u.p99)),
				cell(u.err, fmtReq(u.rtPerOp, u.serverPerOp)), cell(u.err, fmtCount(u.serverPerOp)),
				ratioCell(ref, u, func(x *uncontendedResult) float64 { return x.opsPerSec() }))
		}
	}
	p("\n")

	p("## 2. Hot key: every contender takes one key in a loop, holding it ~%v\n\n", cfg.Hold)
	p("Each contender is its own client (its own connections, session or pool), as separate\n")
	p("processes would be, except in the *dlock, one Client* rows, where all contenders are\n")
	p("goroutines of one `dlock.Client`: they queue locally and the backend sees one contender.\n")
	p("A contender locks again as soon as it has unlocked (a closed loop, no think time).\n\n")
	p("- *critical sections/s*: acquisitions in the window, all contenders together.\n")
	p("- *hand-offs/s*: acquisitions that went to another contender than the one before. A\n")
	p("  polling library lets the contender that just unlocked take the key again while the\n")
	p("  others sleep, so it can show a high rate of critical sections with few hand-offs;\n")
	p("  fairness shows the same thing.\n")
	p("- *hand-off latency*: from one holder calling unlock to another contender's lock\n")
	p("  returning: the release, the wake-up and the winning attempt.\n")
	p("- *fairness*: most / fewest acquisitions of one contender in the window (`/0`: a\n")
	p("  contender never got the key).\n")
	p("- *requests per acquisition*: everything the clients sent during the window and the\n")
	p("  drain after it, divided by the acquisitions (Redis: round trips · server commands).\n\n")
	p("Brackets: dlock's value (own Client per contender) divided by the row's.\n\n")
	for _, b := range r.Backends {
		if len(b.hot) == 0 {
			continue
		}
		name := b.backend.name
		p("### %s\n\n", b.backend.title)
		p("![critical sections per second, %s](hotkey-throughput-%s.png)\n", name, name)
		p("![hand-offs per second, %s](hotkey-handoffs-%s.png)\n", name, name)
		p("![hand-off latency p50, %s](hotkey-handoff-%s.png)\n\n", name, name)
		ns := b.contenderCounts()
		header := func(title string) {
			p("| %s |", title)
			for _, n := range ns {
				p(" %d |", n)
			}
			p("\n| --- |")
			for range ns {
				p(" --- |")
			}
			p("\n")
		}
		rows := func(f func(h, ref *hotResult) string) {
			for _, s := range b.hotSubjects() {
				p("| %s |", s.label())
				for _, n := range ns {
					h := b.findHot(s, n)
					if h == nil {
						p(" |")
						continue
					}
					p(" %s |", f(h, b.findHot(b.subjectByID("dlock"), n)))
				}
				p("\n")
			}
			p("\n")
		}
		p("Critical sections per second:\n\n")
		header("subject \\ contenders")
		rows(func(h, ref *hotResult) string {
			return cell(h.err, fmtRate(h.perSec())) + bracket(ref, h, func(x *hotResult) float64 { return x.perSec() })
		})
		p("Hand-offs per second:\n\n")
		header("subject \\ contenders")
		rows(func(h, ref *hotResult) string {
			return cell(h.err, fmtRate(h.handoffsPerSec())) + bracket(ref, h, func(x *hotResult) float64 { return x.handoffsPerSec() })
		})
		p("Hand-off latency, p50 / p99:\n\n")
		header("subject \\ contenders")
		rows(func(h, _ *hotResult) string {
			if h.handoffs == 0 {
				return cell(h.err, "no hand-off")
			}
			s := fmtDur(h.handoffP50) + " / " + fmtDur(h.handoffP99)
			if h.handoffs < 100 {
				s += fmt.Sprintf(" (%d hand-off%s)", h.handoffs, plural(h.handoffs))
			}
			return cell(h.err, s)
		})
		p("Fairness, most / fewest acquisitions of one contender:\n\n")
		header("subject \\ contenders")
		rows(func(h, _ *hotResult) string {
			s := fmt.Sprintf("%d/%d", h.fairMax, h.fairMin)
			if h.giveUps > 0 {
				s += fmt.Sprintf(" (%d gave up)", h.giveUps)
			}
			if h.overlaps > 0 {
				s += fmt.Sprintf(" **%d overlapping grants**", h.overlaps)
			}
			return cell(h.err, s)
		})
		p("Requests per acquisition%s:\n\n", map[bool]string{true: " (round trips · server commands)", false: ""}[strings.HasPrefix(name, "red")])
		header("subject \\ contenders")
		rows(func(h, _ *hotResult) string { return cell(h.err, fmtReq(h.rtPerAcq, h.serverPerAcq)) })
	}

	p("## 3. Many locks held by one client, kept alive\n\n")
	p("One client takes N keys with a %v TTL and keeps them for %v: dlock with its\n", cfg.HeldTTL, cfg.HeldWindow)
	p("auto-refresh; bsm/redislock, redsync and the SQL table with the loop an application\n")
	p("writes around them (a goroutine per lock refreshing every TTL/3); etcd's Mutex and\n")
	p("zk.Lock on one session, which their session keeps alive. *Requests/s* is the traffic\n")
	p("while the locks are held; *one per lock per TTL/3* is what refreshing each lock on\n")
	p("its own costs; CPU is this process's user+system time per second of the window\n")
	p("(100%% = one core).\n\n")
	p("| backend | subject | locks | requests/s | one per lock per TTL/3 | ratio | server cmds/s | client CPU | lost | time to take them |\n")
	p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, b := range r.Backends {
		for _, h := range b.held {
			req := h.rtPerSec
			if req < 0 {
				req = h.serverPerSec
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", b.backend.name, h.subject.label(), fmtInt(h.keys),
				cell(h.err, fmtRate(req)), fmtRate(h.naivePerSec()), cell(h.err, fmt.Sprintf("%.3f", req/h.naivePerSec())),
				cell(h.err, fmtRate(h.serverPerSec)), cell(h.err, fmt.Sprintf("%.1f%%", h.cpu*100)), fmtInt(h.lost), fmtDur(h.acquire))
		}
	}
	p("\n")
	familyReport(&w, r)
	p("## What the server counts mean\n\n")
	for _, b := range r.Backends {
		p("- %s: %s.\n", b.backend.name, b.backend.serverUnit)
	}
	return w.String()
}

// target is one line of the targets.
type target struct{ what, measured, met string }

func targets(r *Results) []target {
	var ts []target
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	ratioTarget := func(what string, dl, peer float64, min float64) target {
		switch {
		case dl <= 0:
			return target{what, "not measured", "–"}
		case peer <= 0:
			return target{what, fmt.Sprintf("∞ (%s vs 0)", fmtRate(dl)), yes(true)}
		}
		q := dl / peer
		return target{what, fmt.Sprintf("%.2f× (%s vs %s)", q, fmtRate(dl), fmtRate(peer)), yes(q >= min)}
	}
	uncRate := func(b *BackendResults, id string) float64 {
		if u := b.findUnc(id); u != nil && u.err == nil {
			return u.opsPerSec()
		}
		return 0
	}
	hotRate := func(b *BackendResults, id string, n int) float64 {
		if h := b.findHot(b.subjectByID(id), n); h != nil && h.err == nil {
			return h.perSec()
		}
		return 0
	}
	handoffRate := func(b *BackendResults, id string, n int) float64 {
		if h := b.findHot(b.subjectByID(id), n); h != nil && h.err == nil {
			return h.handoffsPerSec()
		}
		return 0
	}
	if b := r.backend("redis"); b != nil {
		ts = append(ts,
			ratioTarget("Redis uncontended ≥ 0.95× the raw floor", uncRate(b, "dlock"), uncRate(b, "floor"), 0.95),
			ratioTarget("(same, against the raw floor with a fence: SET NX PX + INCR in one script)", uncRate(b, "dlock"), uncRate(b, "floor-fenced"), 0.95),
			ratioTarget("Redis uncontended ≥ 1.0× bsm/redislock", uncRate(b, "dlock"), uncRate(b, "redislock"), 1),
			ratioTarget("Redis uncontended ≥ 1.0× redsync", uncRate(b, "dlock"), uncRate(b, "redsync"), 1),
			ratioTarget("Redis uncontended with dlockotel metrics and traces (10% of traces sampled) ≥ 0.95× without them", uncRate(b, "dlock-otel-0.1"), uncRate(b, "dlock"), 0.95),
			ratioTarget("(same, every span sampled)", uncRate(b, "dlock-otel"), uncRate(b, "dlock"), 0.95),
			ratioTarget("Redis hot key, 16 contenders: ≥ 10× redsync (defaults), critical sections/s", hotRate(b, "dlock", 16), hotRate(b, "redsync", 16), 10),
			ratioTarget("(same, counting hand-offs/s: grants to a contender other than the last holder)", handoffRate(b, "dlock", 16), handoffRate(b, "redsync", 16), 10),
			ratioTarget("Redis hot key, 16 contenders: ≥ 2× bsm/redislock with exponential backoff, critical sections/s", hotRate(b, "dlock", 16), hotRate(b, "redislock-tuned", 16), 2),
			ratioTarget("(same, counting hand-offs/s)", handoffRate(b, "dlock", 16), handoffRate(b, "redislock-tuned", 16), 2))
		if h := b.findHot(b.subjectByID("dlock"), 16); h != nil && h.err == nil {
			ts = append(ts, target{"Redis hot key, 16 contenders: ≤ 4 Redis commands per acquisition",
				fmt.Sprintf("%.1f round trips, %.1f server commands (including inside scripts)", h.rtPerAcq, h.serverPerAcq), yes(h.rtPerAcq <= 4)})
		}
		if h := b.findHot(b.subjectByID("dlock-shared"), 16); h != nil && h.err == nil {
			ts = append(ts, target{"(same, 16 goroutines on one dlock Client)",
				fmt.Sprintf("%.1f round trips, %.1f server commands", h.rtPerAcq, h.serverPerAcq), yes(h.rtPerAcq <= 4)})
		}
	}
	for _, bk := range []struct{ name, peer, label string }{{"etcd", "mutex", "concurrency.Mutex"}, {"zookeeper", "zklock", "zk.Lock"}} {
		b := r.backend(bk.name)
		if b == nil {
			continue
		}
		ts = append(ts, ratioTarget(fmt.Sprintf("%s uncontended ≥ 1.0× %s", bk.name, bk.label), uncRate(b, "dlock"), uncRate(b, bk.peer), 1))
		for _, n := range b.contenderCounts() {
			ts = append(ts, ratioTarget(fmt.Sprintf("%s hot key, %d contenders ≥ 1.0× %s", bk.name, n, bk.label), hotRate(b, "dlock", n), hotRate(b, bk.peer, n), 1))
		}
	}
	ts = append(ts, familyTargets(r)...)
	for _, b := range r.Backends {
		for _, h := range b.held {
			if h.subject.id != "dlock" || h.err != nil || h.keys < 10000 {
				continue
			}
			req := h.requestsPerSec()
			q := req / h.naivePerSec()
			m := fmt.Sprintf("%s/s against %s/s (%.3f×)", fmtRate(req), fmtRate(h.naivePerSec()), q)
			if h.lost > 0 {
				m += fmt.Sprintf("; %s of the locks were lost", fmtInt(h.lost))
			}
			ts = append(ts, target{fmt.Sprintf("%s, %s held locks: far fewer round trips than one per lock per TTL/3", b.backend.name, fmtInt(h.keys)),
				m, yes(q <= 0.1 && h.lost == 0)})
		}
	}
	return ts
}

func (r *Results) backend(name string) *BackendResults {
	for _, b := range r.Backends {
		if b.backend.name == name {
			return b
		}
	}
	return nil
}

func (b *BackendResults) findUnc(id string) *uncontendedResult {
	for _, u := range b.uncontended {
		if u.subject.id == id {
			return u
		}
	}
	return nil
}

func (b *BackendResults) subjectByID(id string) *subject {
	for _, s := range b.backend.subjects {
		if s.id == id {
			return s
		}
	}
	return nil
}

func (b *BackendResults) findHot(s *subject, n int) *hotResult {
	for _, h := range b.hot {
		if h.subject == s && h.contenders == n {
			return h
		}
	}
	return nil
}

// hotSubjects lists the subjects with hot-key results, in the backend's
// order.
func (b *BackendResults) hotSubjects() []*subject {
	var out []*subject
	for _, s := range b.backend.subjects {
		for _, h := range b.hot {
			if h.subject == s {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func (b *BackendResults) contenderCounts() []int {
	var ns []int
	seen := map[int]bool{}
	for _, h := range b.hot {
		if !seen[h.contenders] {
			seen[h.contenders] = true
			ns = append(ns, h.contenders)
		}
	}
	return ns
}

func cell(err error, s string) string {
	if err != nil {
		return "error"
	}
	return s
}

func ratioCell(ref, u *uncontendedResult, f func(*uncontendedResult) float64) string {
	if ref == nil || ref == u || ref.err != nil || u.err != nil || f(u) <= 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", f(ref)/f(u))
}

func bracket(ref, h *hotResult, f func(*hotResult) float64) string {
	if ref == nil || ref == h || ref.err != nil || h.err != nil {
		return ""
	}
	if f(h) <= 0 {
		return " (∞)"
	}
	return fmt.Sprintf(" (%.2f×)", f(ref)/f(h))
}

// fmtReq shows round trips and server commands when both are measured.
func fmtReq(rt, server float64) string {
	if rt < 0 {
		return fmtCount(server)
	}
	return fmtCount(rt) + " · " + fmtCount(server)
}

func fmtCount(v float64) string {
	switch {
	case v < 0:
		return "n/a"
	case v >= 100:
		return fmtRate(v)
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

// fmtRate shows a rate with thousands separators, one decimal below 10.
func fmtRate(v float64) string {
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return fmtInt(int(math.Round(v)))
}

func fmtInt(n int) string {
	s := strconv.Itoa(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
