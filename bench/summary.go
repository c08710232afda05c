package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// summaryContenders is the hot-key point the summary shows.
const summaryContenders = 16

// summary renders the headline of a run as a Markdown table: for every peer
// library, dlock's uncontended rate, hot-key hand-offs and critical
// sections at 16 contenders divided by the peer's, and the refresh traffic
// of 10,000 held locks side by side.
func summary(r *Results) string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	p("| backend | dlock ÷ | uncontended lock+unlock/s | hot key, %d contenders: hand-offs/s | critical sections/s | 10,000 held locks: requests/s (dlock vs this) |\n", summaryContenders)
	p("| --- | --- | --- | --- | --- | --- |\n")
	for _, b := range r.Backends {
		dl := b.subjectByID("dlock")
		for _, s := range b.backend.subjects {
			if s.role != rolePeer {
				continue
			}
			unc := "–"
			if u, ref := b.findUnc(s.id), b.findUnc("dlock"); u != nil {
				unc = ratioCell(ref, u, func(x *uncontendedResult) float64 { return x.opsPerSec() })
			}
			handoffs, sections := "–", "–"
			if h := b.findHot(s, summaryContenders); h != nil && dl != nil {
				ref := b.findHot(dl, summaryContenders)
				handoffs = strings.Trim(bracket(ref, h, func(x *hotResult) float64 { return x.handoffsPerSec() }), " ()")
				sections = strings.Trim(bracket(ref, h, func(x *hotResult) float64 { return x.perSec() }), " ()")
			}
			held := "–"
			if h, ref := b.findHeld(s, 10000), b.findHeld(dl, 10000); h != nil && ref != nil && h.err == nil && ref.err == nil {
				held = fmt.Sprintf("%s vs %s", fmtRate(ref.requestsPerSec()), fmtRate(h.requestsPerSec()))
			}
			p("| %s | %s | %s | %s | %s | %s |\n", b.backend.name, s.label(), orDash(unc), orDash(handoffs), orDash(sections), held)
		}
	}
	w.WriteString(familySummary(r))
	return w.String()
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func (b *BackendResults) findHeld(s *subject, keys int) *heldResult {
	if s == nil {
		return nil
	}
	for _, h := range b.held {
		if h.subject == s && h.keys == keys {
			return h
		}
	}
	return nil
}

// requestsPerSec is the round trips per second where the client counts
// them, else the server's count.
func (r *heldResult) requestsPerSec() float64 {
	if r.rtPerSec >= 0 {
		return r.rtPerSec
	}
	return r.serverPerSec
}

// Markers around the summary in the README.
const (
	summaryStart = "<!-- dlockbench summary: start -->"
	summaryEnd   = "<!-- dlockbench summary: end -->"
)

// updateReadme replaces what lies between the summary markers in the file
// at path with the run's summary.
func updateReadme(path string, r *Results) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i := bytes.Index(b, []byte(summaryStart))
	j := bytes.Index(b, []byte(summaryEnd))
	if i < 0 || j < i {
		return errors.New(path + ": no summary markers")
	}
	var out bytes.Buffer
	out.Write(b[:i+len(summaryStart)])
	fmt.Fprintf(&out, "\n\nFrom the run of %s, %d CPUs (ratios above 1: dlock is ahead; see [docs/bench/RESULTS.md](docs/bench/RESULTS.md) for every number):\n\n", r.Started.UTC().Format("2006-01-02"), r.Machine.CPUs)
	out.WriteString(summary(r))
	out.WriteString("\n")
	out.Write(b[j:])
	return os.WriteFile(path, out.Bytes(), 0o644)
}
