package bench

import (
	"fmt"
	"strings"
)

// familyReport renders the semaphore and readers–writer sections of
// RESULTS.md.
func familyReport(w *strings.Builder, r *Results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	cfg := r.Config
	var any4, any5, any6 bool
	for _, b := range r.Backends {
		any4 = any4 || len(b.semUnc) > 0
		any5 = any5 || len(b.sem) > 0
		any6 = any6 || len(b.rw) > 0
	}
	if any4 {
		p("## 4. Semaphore, uncontended: a free permit beside a mutex\n\n")
		p("One dlock Client takes and gives back a permit of a semaphore of limit %d\n", cfg.SemLimit)
		p("(`Semaphore.Acquire` + `Unlock`) on a free key, beside the same backend's mutex\n")
		p("(`Client.Lock` + `Unlock`), %v each in %d alternating slices. Requests as in\n", cfg.SemUncontended, uncontendedRounds)
		p("section 1 (Redis: round trips · server commands). The last column is the\n")
		p("semaphore's rate divided by the mutex's.\n\n")
		p("| backend | subject | acquire+release/s | p50 | p99 | requests/op | semaphore ÷ mutex |\n")
		p("| --- | --- | --- | --- | --- | --- | --- |\n")
		for _, b := range r.Backends {
			mutex := findUncIn(b.semUnc, idMutex)
			for _, u := range b.semUnc {
				ratio := ""
				if u.subject.id == idSemaphore && mutex != nil && mutex.err == nil && u.err == nil && mutex.opsPerSec() > 0 {
					ratio = fmt.Sprintf("%.2f×", u.opsPerSec()/mutex.opsPerSec())
				}
				p("| %s | %s | %s | %s | %s | %s | %s |\n", b.backend.name, u.subject.label(),
					cell(u.err, fmtRate(u.opsPerSec())), cell(u.err, fmtDur(u.p50)), cell(u.err, fmtDur(u.p99)),
					cell(u.err, fmtReq(u.rtPerOp, u.serverPerOp)), ratio)
			}
		}
		p("\n")
	}
	if any5 {
		p("## 5. Semaphore, contended: %d contenders, %d permits, holds of ~%v\n\n", cfg.SemContenders, cfg.SemLimit, cfg.Hold)
		p("Every contender is its own client and takes a permit in a closed loop, as on the\n")
		p("hot key. The baseline is the semaphore applications write without one: %d mutex\n", cfg.SemLimit)
		p("\"slots\" (keys `…/0` … `…/%d`) of the backend's usual mutex library, tried in turn\n", cfg.SemLimit-1)
		p("with a try-lock starting from a random slot, and a random %v–%v backoff after a\n", slotBackoffMin, slotBackoffMax)
		p("round that found every slot held.\n\n")
		p("- *hand-off latency*: from a holder calling unlock to the grant of the permit it\n")
		p("  freed to another contender (the grants beyond the first %d are matched, in order,\n", cfg.SemLimit)
		p("  with the releases before them); *hand-offs/s* counts those grants.\n")
		p("- *peak holders*: the most contenders holding at once, counted in this process\n")
		p("  (up after the grant, down before the release); above %d the run fails.\n", cfg.SemLimit)
		p("- Brackets: dlock's semaphore divided by the row's.\n\n")
		p("| backend | subject | critical sections/s | hand-offs/s | hand-off p50 / p99 | longest | fairness | peak holders | requests/acq |\n")
		p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, b := range r.Backends {
			ref := findSem(b, idSemaphore)
			for _, h := range b.sem {
				fair := fmt.Sprintf("%d/%d", h.fairMax, h.fairMin)
				if h.giveUps > 0 {
					fair += fmt.Sprintf(" (%d gave up)", h.giveUps)
				}
				peak := fmt.Sprintf("%d of %d", h.peak, h.limit)
				if h.peak > h.limit {
					peak = "**" + peak + ": LIMIT EXCEEDED**"
				}
				lat := "no hand-off"
				if h.handoffs > 0 {
					lat = fmtDur(h.handoffP50) + " / " + fmtDur(h.handoffP99)
				}
				p("| %s | %s: %s | %s | %s | %s | %s | %s | %s | %s |\n", b.backend.name, h.subject.name, h.subject.setting,
					cell(h.err, fmtRate(h.perSec()))+bracket(ref, h, func(x *hotResult) float64 { return x.perSec() }),
					cell(h.err, fmtRate(h.handoffsPerSec()))+bracket(ref, h, func(x *hotResult) float64 { return x.handoffsPerSec() }),
					cell(h.err, lat), cell(h.err, fmtDur(h.handoffMax)), cell(h.err, fair), peak,
					cell(h.err, fmtReq(h.rtPerAcq, h.serverPerAcq)))
			}
		}
		p("\n")
	}
	if any6 {
		p("## 6. Readers–writer lock: %d readers, %d writers\n\n", cfg.RWReaders, cfg.RWWriters)
		p("Each reader and writer is its own dlock Client on one key, for %v. Readers take the\n", cfg.RWWindow)
		p("key in a closed loop and hold it ~%v; writers hold it ~%v and pause %v between\n", cfg.RWReadHold, cfg.RWWriteHold, cfg.RWWriterPause)
		p("writes. The baseline is the same workload on one dlock mutex (everyone exclusive).\n")
		p("*Wait* is from the call to the grant. The program checks that no writer ever held the\n")
		p("key with anyone else (a violation fails the run). The last column is the RWMutex's\n")
		p("sections per second (reads and writes) divided by the row's.\n\n")
		p("| backend | subject | reads/s | writes/s | writer wait p50 / p99 | reader wait p50 / p99 | peak readers | requests/section | RWMutex ÷ this |\n")
		p("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, b := range r.Backends {
			ref := findRW(b, idRWMutex)
			for _, x := range b.rw {
				ratio := ""
				if ref != nil && ref != x && ref.err == nil && x.err == nil && x.perSec() > 0 {
					ratio = fmt.Sprintf("%.2f×", ref.perSec()/x.perSec())
				}
				p("| %s | %s | %s | %s | %s | %s | %d | %s | %s |\n", b.backend.name, x.subject.label(),
					cell(x.err, fmtRate(x.readsPerSec())), cell(x.err, fmtRate(x.writesPerSec())),
					cell(x.err, fmtDur(x.writerP50)+" / "+fmtDur(x.writerP99)), cell(x.err, fmtDur(x.readerP50)+" / "+fmtDur(x.readerP99)),
					x.peakReaders, cell(x.err, fmtReq(x.rtPerOp, x.serverPerOp)), ratio)
			}
		}
		p("\n")
	}
}

// familyTargets are the lock-family targets, per backend.
func familyTargets(r *Results) []target {
	var ts []target
	for _, b := range r.Backends {
		mutex, sem := findUncIn(b.semUnc, idMutex), findUncIn(b.semUnc, idSemaphore)
		if mutex != nil && sem != nil && mutex.err == nil && sem.err == nil {
			mr, sr := requestsPerOp(mutex), requestsPerOp(sem)
			met := "yes"
			if sr > mr+0.05 {
				met = "**no**"
			}
			ts = append(ts, target{
				fmt.Sprintf("%s: a semaphore's acquire+release of a free permit costs the round trips of a mutex's lock+unlock", b.backend.name),
				fmt.Sprintf("%.1f requests against %.1f; %.2f× the mutex's rate", sr, mr, sem.opsPerSec()/mutex.opsPerSec()), met})
		}
		if h := findSem(b, idSemaphore); h != nil && h.err == nil {
			m := fmt.Sprintf("p50 %s, p99 %s", fmtDur(h.handoffP50), fmtDur(h.handoffP99))
			if mutex != nil && mutex.err == nil {
				m += fmt.Sprintf("; an uncontended mutex lock+unlock (%.1f requests): p50 %s", requestsPerOp(mutex), fmtDur(mutex.p50))
			}
			if s := findSem(b, idSlots); s != nil && s.err == nil {
				m += fmt.Sprintf("; the slots: p50 %s, p99 %s", fmtDur(s.handoffP50), fmtDur(s.handoffP99))
			}
			ts = append(ts, target{fmt.Sprintf("%s: a permit's hand-off costs about one round trip after the release, not a poll", b.backend.name), m, "–"})
		}
	}
	return ts
}

// familySummary is the lock family's lines under the summary table.
func familySummary(r *Results) string {
	var sem, free, rw []string
	for _, b := range r.Backends {
		if h, s := findSem(b, idSemaphore), findSem(b, idSlots); h != nil && s != nil {
			if q := strings.Trim(bracket(h, s, func(x *hotResult) float64 { return x.perSec() }), " ()"); q != "" {
				sem = append(sem, b.backend.name+" "+q)
			}
		}
		if m, s := findUncIn(b.semUnc, idMutex), findUncIn(b.semUnc, idSemaphore); m != nil && s != nil && m.err == nil && s.err == nil && m.opsPerSec() > 0 {
			free = append(free, fmt.Sprintf("%s %.2f×", b.backend.name, s.opsPerSec()/m.opsPerSec()))
		}
		if x, one := findRW(b, idRWMutex), findRW(b, idOneMutex); x != nil && one != nil && x.err == nil && one.err == nil && one.perSec() > 0 {
			rw = append(rw, fmt.Sprintf("%s %.2f×", b.backend.name, x.perSec()/one.perSec()))
		}
	}
	var w strings.Builder
	cfg := r.Config
	if len(sem) > 0 || len(free) > 0 {
		fmt.Fprintf(&w, "\n- Semaphore, %d permits, %d contenders: dlock ÷ %d hand-written mutex slots in critical sections/s: %s; a free permit's acquire+release ÷ a mutex's lock+unlock: %s.\n",
			cfg.SemLimit, cfg.SemContenders, cfg.SemLimit, orDash(strings.Join(sem, ", ")), orDash(strings.Join(free, ", ")))
	}
	if len(rw) > 0 {
		if len(sem) == 0 && len(free) == 0 {
			w.WriteString("\n")
		}
		fmt.Fprintf(&w, "- RWMutex, %d readers and %d writers: ÷ the same workload on one mutex, sections/s: %s.\n", cfg.RWReaders, cfg.RWWriters, strings.Join(rw, ", "))
	}
	return w.String()
}

func findUncIn(us []*uncontendedResult, id string) *uncontendedResult {
	for _, u := range us {
		if u.subject.id == id {
			return u
		}
	}
	return nil
}

func findSem(b *BackendResults, id string) *hotResult {
	for _, h := range b.sem {
		if h.subject.id == id {
			return h
		}
	}
	return nil
}

func findRW(b *BackendResults, id string) *rwResult {
	for _, x := range b.rw {
		if x.subject.id == id {
			return x
		}
	}
	return nil
}

// requestsPerOp is round trips per cycle where the client counts them,
// else the server's count of requests.
func requestsPerOp(u *uncontendedResult) float64 {
	if u.rtPerOp >= 0 {
		return u.rtPerOp
	}
	return u.serverPerOp
}
