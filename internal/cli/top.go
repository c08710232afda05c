package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/term"

	"github.com/dlock-go/dlock"
)

const topUsage = `Usage: dlock top [flags] [PREFIX]

A live view of the held locks under PREFIX (all of them without one): each
key's holder (its metadata: host, pid, user and command of a "dlock run"),
fence, remaining TTL and waiters, read again every --interval. Keys with
shared holders (a semaphore's permits, an RW lock's readers) show how many
hold them. q, Esc or Ctrl-C quits.

On a terminal it draws a full-screen table; otherwise, or with --json, it
prints one snapshot per interval: a plain table, or one JSON object per
line:

  {"time":"2026-12-08T01:02:03Z","keys":[{"key":"job","held":true,"fence":17,"expires_in_ms":28000,"holder":"host=web1 pid=4242","waiters":2}]}

It needs a backend that can list its locks (every bundled one can) and says
so for one that cannot.
`

// topMaxShared bounds the keys per snapshot whose shared holders are read
// (one request each).
const topMaxShared = 100

func cmdTop(args []string, sio stdio) error {
	fs := newFlagSet("top", topUsage, sio)
	bf := addBackendFlags(fs)
	bf.shared = true
	asJSON := fs.Bool("json", false, "print one JSON object per snapshot instead of drawing the table")
	interval := durationFlag(fs, "interval", time.Second, "read the locks again every `D`")
	count := fs.Int("count", 0, "stop after `N` snapshots (0: until interrupted)")
	if done, err := parseFlags(fs, args, sio); done {
		return err
	}
	if fs.NArg() > 1 {
		return usageError("top", "expected at most one PREFIX, got %d arguments", fs.NArg())
	}
	if *interval < 10*time.Millisecond {
		return usageError("top", "--interval must be at least 10ms, got %v", *interval)
	}
	if *count < 0 {
		return usageError("top", "--count must not be negative, got %d", *count)
	}
	prefix := fs.Arg(0)

	ctx, stop := signalContext()
	defer stop()
	octx, ocancel := context.WithTimeout(ctx, *bf.timeout)
	c, shown, err := bf.open(octx)
	ocancel()
	if err != nil {
		return err
	}
	defer c.Close()
	read := func(ctx context.Context) (topSnapshot, error) {
		rctx, cancel := context.WithTimeout(ctx, *bf.timeout)
		defer cancel()
		s, err := readTop(rctx, c, prefix)
		switch {
		case errors.Is(err, dlock.ErrUnsupported):
			return s, exitf(ExitUnavailable, "dlock: top: backend %s cannot list its locks; dlock top needs one that can", shown)
		case err != nil:
			return s, backendError(ctx, rctx, err, "top on "+shown)
		}
		return s, nil
	}
	// The first read tells an unsupported backend before the screen is
	// taken.
	first, err := read(ctx)
	if err != nil {
		return err
	}
	if !*asJSON && isTerminal(sio.out) {
		return runTopUI(ctx, sio, shown, prefix, *interval, *count, first, read)
	}
	for n := 1; ; n++ {
		if *asJSON {
			b, err := first.json()
			if err != nil {
				return exitf(ExitFailure, "dlock: top: %v", err)
			}
			fmt.Fprintf(sio.out, "%s\n", b)
		} else {
			fmt.Fprintf(sio.out, "%s\n", first.text(shown, prefix, 0))
		}
		if *count > 0 && n >= *count {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
		if first, err = read(ctx); err != nil {
			return err
		}
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(f.Fd())
}

// topKey is one held key of a snapshot.
type topKey struct {
	info    dlock.Info
	holders *dlock.Holders // shared grants, or nil
}

// topSnapshot is what one read of the locks found.
type topSnapshot struct {
	at   time.Time
	keys []topKey
}

// readTop lists the held keys under prefix and, for keys with shared
// holders, reads them (for the first topMaxShared keys).
func readTop(ctx context.Context, c *dlock.Client, prefix string) (topSnapshot, error) {
	infos, err := c.List(ctx, prefix)
	if err != nil {
		return topSnapshot{}, err
	}
	s := topSnapshot{at: time.Now()}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	shared := true
	for i, in := range infos {
		k := topKey{info: in}
		if shared && i < topMaxShared {
			h, err := c.Holders(ctx, in.Key)
			switch {
			case errors.Is(err, dlock.ErrUnsupported):
				shared = false // no shared leases on this backend
			case err != nil:
				return topSnapshot{}, err
			case len(h.Holders) > 0 && h.Holders[0].Shared:
				k.holders = &h
			}
		}
		s.keys = append(s.keys, k)
	}
	return s, nil
}

// jsonTop is one snapshot of top --json.
type jsonTop struct {
	Time time.Time         `json:"time"`
	Keys []json.RawMessage `json:"keys"`
}

func (s topSnapshot) json() ([]byte, error) {
	out := jsonTop{Time: s.at.UTC(), Keys: []json.RawMessage{}}
	for _, k := range s.keys {
		b, err := statusJSON(k.info, k.holders)
		if err != nil {
			return nil, err
		}
		out.Keys = append(out.Keys, b)
	}
	return json.Marshal(out)
}

// totals are the snapshot's held keys and known waiters.
func (s topSnapshot) totals() (keys, waiters int) {
	for _, k := range s.keys {
		if k.info.Waiters > 0 {
			waiters += k.info.Waiters
		}
	}
	return len(s.keys), waiters
}

// rows renders the snapshot's keys as table rows: key, fence, TTL,
// waiters, holder.
func (s topSnapshot) rows() [][5]string {
	var rows [][5]string
	for _, k := range s.keys {
		in := k.info
		fence, ttl, waiters := "-", "-", "?"
		if in.Fence > 0 {
			fence = strconv.FormatUint(in.Fence, 10)
		}
		if in.TTL > 0 {
			ttl = roundDuration(in.TTL).String()
		}
		if in.Waiters >= 0 {
			waiters = strconv.Itoa(in.Waiters)
		}
		holder := oneLine(in.Metadata)
		if k.holders != nil {
			holder = strings.TrimPrefix(describeHolders(*k.holders), " by ")
		}
		rows = append(rows, [5]string{oneLine(in.Key), fence, ttl, waiters, holder})
	}
	return rows
}

var topColumns = [5]string{"KEY", "FENCE", "TTL", "WAITERS", "HOLDER"}

// text renders the snapshot as a plain table, at most limit rows of keys
// (0: all), with a header line.
func (s topSnapshot) text(shown, prefix string, limit int) string {
	keys, waiters := s.totals()
	var b strings.Builder
	under := ""
	if prefix != "" {
		under = " under " + strconv.Quote(prefix)
	}
	fmt.Fprintf(&b, "dlock top — %s%s — %d held, %d waiting — %s\n", shown, under, keys, waiters, s.at.Format("15:04:05"))
	rows := s.rows()
	more := 0
	if limit > 0 && len(rows) > limit {
		rows, more = rows[:limit], len(rows)-limit
	}
	var width [5]int
	for i, c := range topColumns {
		width[i] = len(c)
	}
	for _, r := range rows {
		for i := range 4 {
			width[i] = max(width[i], lipgloss.Width(r[i]))
		}
	}
	line := func(r [5]string) {
		for i := range 4 {
			b.WriteString(r[i] + strings.Repeat(" ", width[i]-lipgloss.Width(r[i])+2))
		}
		b.WriteString(r[4] + "\n")
	}
	line(topColumns)
	for _, r := range rows {
		line(r)
	}
	if more > 0 {
		fmt.Fprintf(&b, "… %d more\n", more)
	}
	if keys == 0 {
		b.WriteString("(no held locks)\n")
	}
	return b.String()
}

// The full-screen view.

type topModel struct {
	shown, prefix string
	interval      time.Duration
	count, n      int
	snap          topSnapshot
	err           error
	height        int
	read          func(context.Context) (topSnapshot, error)
	ctx           context.Context
}

type topTick struct{}

type topRead struct {
	snap topSnapshot
	err  error
}

var (
	topHeader = lipgloss.NewStyle().Bold(true)
	topFooter = lipgloss.NewStyle().Faint(true)
)

func (m topModel) Init() tea.Cmd { return m.tick() }

func (m topModel) tick() tea.Cmd {
	return tea.Tick(m.interval, func(time.Time) tea.Msg { return topTick{} })
}

func (m topModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		switch msg.String() {
		case "q", "esc", "ctrl+c":
			return m, tea.Quit
		}
	case tea.WindowSizeMsg:
		m.height = msg.Height
	case topTick:
		read, ctx := m.read, m.ctx
		return m, func() tea.Msg {
			s, err := read(ctx)
			return topRead{s, err}
		}
	case topRead:
		if msg.err != nil {
			m.err = msg.err
			return m, tea.Quit
		}
		m.snap, m.n = msg.snap, m.n+1
		if m.count > 0 && m.n >= m.count {
			return m, tea.Quit
		}
		return m, m.tick()
	}
	return m, nil
}

func (m topModel) View() string {
	limit := 0
	if m.height > 5 {
		limit = m.height - 4 // header, column names, "more", footer
	}
	t := m.snap.text(m.shown, m.prefix, limit)
	head, rest, _ := strings.Cut(t, "\n")
	return topHeader.Render(head) + "\n" + rest + topFooter.Render("q quits · every "+m.interval.String())
}

// runTopUI draws the table full-screen until q, Ctrl-C, the end of ctx,
// count snapshots, or a failed read.
func runTopUI(ctx context.Context, sio stdio, shown, prefix string, interval time.Duration, count int, first topSnapshot, read func(context.Context) (topSnapshot, error)) error {
	m := topModel{shown: shown, prefix: prefix, interval: interval, count: count, snap: first, n: 1, read: read, ctx: ctx}
	if count == 1 {
		fmt.Fprint(sio.out, first.text(shown, prefix, 0))
		return nil
	}
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithContext(ctx), tea.WithOutput(sio.out), tea.WithInput(os.Stdin))
	final, err := p.Run()
	if errors.Is(err, tea.ErrProgramKilled) || errors.Is(err, context.Canceled) {
		return nil
	}
	if err != nil {
		return exitf(ExitFailure, "dlock: top: %v", err)
	}
	if fm, ok := final.(topModel); ok && fm.err != nil {
		return fm.err
	}
	return nil
}
