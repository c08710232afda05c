package sqllease

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/dlock-go/dlock/driver"
)

func TestParseTable(t *testing.T) {
	tests := []struct {
		in        string
		ok        bool
		pg, mysql string
	}{
		{"dlock_locks", true, `"dlock_locks"`, "`dlock_locks`"},
		{"s.t", true, `"s"."t"`, "`s`.`t`"},
		{"Mixed_Case9", true, `"Mixed_Case9"`, "`Mixed_Case9`"},
		{"_x", true, `"_x"`, "`_x`"},
		{strings.Repeat("a", 63), true, `"` + strings.Repeat("a", 63) + `"`, "`" + strings.Repeat("a", 63) + "`"},
		{strings.Repeat("a", 64), false, "", ""},
		{"a.b.c", false, "", ""},
		{".t", false, "", ""},
		{"s.", false, "", ""},
		{"1t", false, "", ""},
		{"a-b", false, "", ""},
		{`a"b`, false, "", ""},
		{"a`b", false, "", ""},
		{"a b", false, "", ""},
		{"tablé", false, "", ""},
	}
	for _, tc := range tests {
		got, err := ParseTable(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseTable(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, driver.ErrInvalidOption) {
				t.Errorf("ParseTable(%q) = %v, want ErrInvalidOption", tc.in, err)
			}
			continue
		}
		if q := got.Quote(`"`); q != tc.pg {
			t.Errorf("ParseTable(%q).Quote(\") = %s, want %s", tc.in, q, tc.pg)
		}
		if q := got.Quote("`"); q != tc.mysql {
			t.Errorf("ParseTable(%q).Quote(`) = %s, want %s", tc.in, q, tc.mysql)
		}
		if got.String() != tc.in {
			t.Errorf("ParseTable(%q).String() = %q", tc.in, got.String())
		}
	}
}

func TestParseTableDefault(t *testing.T) {
	if got, err := ParseTable(""); err != nil || got != (Table{Name: DefaultTable}) {
		t.Errorf("ParseTable(\"\") = %+v, %v, want DefaultTable", got, err)
	}
}

func TestMicros(t *testing.T) {
	tests := []struct {
		ttl  time.Duration
		want int64
	}{
		{10 * time.Millisecond, 10000},
		{time.Microsecond, 1},
		{time.Nanosecond, 1},
		{1500 * time.Nanosecond, 2},
		{time.Duration(math.MaxInt64), math.MaxInt64/1000 + 1},
	}
	for _, tc := range tests {
		if got := Micros(tc.ttl); got != tc.want {
			t.Errorf("Micros(%v) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
	for _, tc := range []struct {
		us   int64
		want time.Duration
	}{{-5, 0}, {0, 0}, {1500, 1500 * time.Microsecond}, {math.MaxInt64, math.MaxInt64}} {
		if got := FromMicros(tc.us); got != tc.want {
			t.Errorf("FromMicros(%d) = %v, want %v", tc.us, got, tc.want)
		}
	}
}

// Millis never wraps: the old (ttl + 1ms - 1) / 1ms went negative near
// math.MaxInt64, and a lease then ended in the past.
func TestMillis(t *testing.T) {
	tests := []struct {
		ttl  time.Duration
		want int64
	}{
		{10 * time.Millisecond, 10},
		{time.Nanosecond, 1},
		{time.Millisecond + 1, 2},
		{driver.MaxTTL, driver.MaxTTL.Milliseconds()},
		{time.Duration(math.MaxInt64), math.MaxInt64/int64(time.Millisecond) + 1},
	}
	for _, tc := range tests {
		if got := Millis(tc.ttl); got != tc.want {
			t.Errorf("Millis(%v) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
	for _, tc := range []struct {
		ms   int64
		want time.Duration
	}{{-5, 0}, {0, 0}, {1500, 1500 * time.Millisecond}, {driver.MaxTTL.Milliseconds(), driver.MaxTTL}, {math.MaxInt64, math.MaxInt64}} {
		if got := FromMillis(tc.ms); got != tc.want {
			t.Errorf("FromMillis(%d) = %v, want %v", tc.ms, got, tc.want)
		}
	}
}

func TestUnavailable(t *testing.T) {
	cause := fmt.Errorf("dial user=app password=hunter2: %w", context.DeadlineExceeded)
	err := Unavailable("postgres", "db:5432", "hunter2", cause)
	if !errors.Is(err, driver.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v does not match ErrUnavailable and its cause", err)
	}
	if msg := err.Error(); strings.Contains(msg, "hunter2") || !strings.Contains(msg, "postgres at db:5432") {
		t.Errorf("message %q: want the backend and address, without the password", msg)
	}
}

func TestHub(t *testing.T) {
	var h Hub
	a, stopA := h.Watch("k")
	b, stopB := h.Watch("k")
	c, stopC := h.Watch("other")
	defer stopC()
	if h.Len() != 3 {
		t.Fatalf("Len = %d, want 3", h.Len())
	}
	h.Notify("k")
	h.Notify("k") // buffered one; the second send must not block
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("watcher of k not woken")
		}
	}
	select {
	case <-c:
		t.Fatal("watcher of another topic woken")
	default:
	}
	stopA()
	stopA()
	h.NotifyAll()
	select {
	case <-a:
		t.Fatal("stopped watcher woken")
	default:
	}
	select {
	case <-c:
	default:
		t.Fatal("NotifyAll missed a watcher")
	}
	stopB()
	if h.Len() != 1 {
		t.Fatalf("Len = %d, want 1", h.Len())
	}
}

func TestServerWrap(t *testing.T) {
	refused := errors.New("syntax error")
	s := &Server{Package: "pgdlock", Backend: "postgres", Addr: "db:5432", Secret: "hunter2", Table: Table{Name: "locks"},
		Refused: func(err error) bool { return errors.Is(err, refused) }}
	err := s.Wrap("acquire", refused)
	if !errors.Is(err, refused) || errors.Is(err, driver.ErrUnavailable) || err.Error() != "pgdlock: acquire (table locks): syntax error" {
		t.Errorf("Wrap of a refused statement = %q, want it with package, op and table, not ErrUnavailable", err)
	}
	lost := errors.New("conn to hunter2 reset")
	err = s.Wrap("refresh", lost)
	if !errors.Is(err, lost) || !errors.Is(err, driver.ErrUnavailable) || strings.Contains(err.Error(), "hunter2") ||
		!strings.Contains(err.Error(), "postgres at db:5432: refresh: conn to") {
		t.Errorf("Wrap of a lost connection = %q, want ErrUnavailable naming backend, address and op, without the password", err)
	}
}

// With One, a release wakes one watcher without a pending wake-up, and a
// watcher that stops with a wake-up passes it on.
func TestHubOne(t *testing.T) {
	h := Hub{One: true}
	a, stopA := h.Watch("k")
	b, stopB := h.Watch("k")
	defer stopB()
	pending := func() int { return len(a) + len(b) }
	h.Notify("k")
	if pending() != 1 {
		t.Fatalf("after one Notify %d watchers woken, want 1", pending())
	}
	h.Notify("k")
	h.Notify("k") // both have one pending: no one to wake, and no block
	if len(a) != 1 || len(b) != 1 {
		t.Fatalf("after three Notifies a, b have %d, %d pending, want 1, 1", len(a), len(b))
	}
	<-b
	stopA() // its unused wake-up goes to b
	select {
	case <-b:
	default:
		t.Error("a watcher's unused wake-up was not passed on")
	}
}

// NotifyEach wakes every watcher of the topic, also with One, and no
// watcher of another topic.
func TestHubNotifyEach(t *testing.T) {
	h := Hub{One: true}
	a, stopA := h.Watch("k")
	defer stopA()
	b, stopB := h.Watch("k")
	defer stopB()
	other, stopO := h.Watch("j")
	defer stopO()
	h.NotifyEach("k")
	if len(a) != 1 || len(b) != 1 || len(other) != 0 {
		t.Errorf("after NotifyEach(k): k's watchers have %d, %d pending, j's %d; want 1, 1, 0", len(a), len(b), len(other))
	}
}

func TestShares(t *testing.T) {
	if got := (Table{Schema: "s", Name: "locks"}).Shares(); got != (Table{Schema: "s", Name: "locks_shares"}) {
		t.Errorf("Shares = %+v", got)
	}
	long := strings.Repeat("a", 60)
	got := Table{Name: long}.Shares()
	if len(got.Name) > maxIdent || !strings.HasSuffix(got.Name, SharesSuffix) || got == (Table{Name: strings.Repeat("a", 59) + "b"}).Shares() {
		t.Errorf("Shares of a long name = %q", got.Name)
	}
}

// An observer is woken by every notification of its topic, with One too,
// and takes no watcher's wake-up.
func TestHubObserve(t *testing.T) {
	h := Hub{One: true}
	w, stopW := h.Watch("k")
	defer stopW()
	o, stopO := h.Observe("k")
	h.Notify("k")
	if len(w) != 1 || len(o) != 1 {
		t.Fatalf("after Notify: watcher has %d pending, observer %d; want 1, 1", len(w), len(o))
	}
	<-w
	<-o
	h.NotifyEach("k")
	h.Notify("j")
	if len(w) != 1 || len(o) != 1 {
		t.Fatalf("after NotifyEach(k), Notify(j): watcher has %d pending, observer %d; want 1, 1", len(w), len(o))
	}
	// An observer that stops with a wake-up pending passes nothing on.
	<-w
	stopO()
	stopO()
	if len(w) != 0 || h.Len() != 1 {
		t.Errorf("after the observer stopped: watcher has %d pending, Len %d; want 0, 1", len(w), h.Len())
	}
}
