package simrun

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// display shows the run while it goes: a progress bar during the ramp,
// then a compact status table, both redrawn in place on a terminal; plain
// lines every few seconds otherwise. Notes (cluster start, events) print
// above it. A nil writer shows nothing.
type display struct {
	w     io.Writer
	tty   bool
	every time.Duration

	mu        sync.Mutex
	lines     int // lines of the last drawing (tty)
	lastPlain time.Time
	prevEver  int
	prevAt    time.Time
	prevPush  int64
}

func newDisplay(w io.Writer, tty bool, every time.Duration) *display {
	return &display{w: w, tty: tty, every: every}
}

// note prints a line for people.
func (d *display) note(msg string) {
	if d.w == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearLocked()
	fmt.Fprintln(d.w, msg)
}

// clearLocked erases the last drawing. d.mu held.
func (d *display) clearLocked() {
	if d.tty && d.lines > 0 {
		fmt.Fprintf(d.w, "\033[%dA\033[J", d.lines)
		d.lines = 0
	}
}

func (d *display) start(r *runner) {
	d.mu.Lock()
	d.prevAt = r.t0
	d.mu.Unlock()
}

// update draws the state after a sample.
func (d *display) update(r *runner, t report, now time.Time) {
	if d.w == nil {
		return
	}
	lines := r.statusLines(t, now, d)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tty {
		d.clearLocked()
		for _, l := range lines {
			fmt.Fprintln(d.w, l)
		}
		d.lines = len(lines)
		return
	}
	if now.Sub(d.lastPlain) < d.every {
		return
	}
	d.lastPlain = now
	fmt.Fprintln(d.w, strings.Join(lines, " | "))
}

// stop leaves the last drawing on the screen.
func (d *display) stop() {
	d.mu.Lock()
	d.lines = 0
	d.mu.Unlock()
}

// statusLines renders the state: the ramp's progress bar, or the table.
func (r *runner) statusLines(t report, now time.Time, d *display) []string {
	d.mu.Lock()
	dt := now.Sub(d.prevAt).Seconds()
	rate := 0.0
	if dt > 0 {
		rate = float64(t.EverConnected-d.prevEver) / dt
	}
	d.prevEver, d.prevAt = t.EverConnected, now
	d.mu.Unlock()

	r.mu.Lock()
	rampDone := !r.rampDone.IsZero()
	r.mu.Unlock()
	elapsed := now.Sub(r.t0).Truncate(time.Second)
	due := r.dueAtStart()
	if !rampDone && t.EverConnected < due {
		const width = 30
		filled := int(float64(width) * float64(t.EverConnected) / float64(max(due, 1)))
		eta := "-"
		if rate > 0 {
			eta = (time.Duration(float64(due-t.EverConnected)/rate) * time.Second).Truncate(time.Second).String()
		}
		bar := strings.Repeat("#", filled) + strings.Repeat(".", width-filled)
		return []string{fmt.Sprintf("ramp [%s] %s/%s devices  %s/s  eta %s  (%v)", bar, num(t.EverConnected), num(due), num(int(rate)), eta, elapsed)}
	}

	total := "until Ctrl-C"
	if !r.o.UntilCancelled {
		total = r.s.Duration.String()
	}
	lines := []string{
		fmt.Sprintf("%s  %v/%s", r.s.Name, elapsed, total),
		fmt.Sprintf("devices  %s/%s connected  reconnects %s  stopped %d", num(t.Connected), num(t.Devices), num(int(t.Connects-int64(t.EverConnected))), t.Stopped),
	}
	if r.app != nil && len(r.app.streams) > 0 {
		at := r.app.totals()
		d.mu.Lock()
		prate := 0.0
		if dt > 0 {
			prate = float64(at.pushes-d.prevPush) / dt
		}
		d.prevPush = at.pushes
		d.mu.Unlock()
		lines = append(lines, fmt.Sprintf("pushes   %s (%s/s)  acked %s  offline %s  timeout %s  lost %s  dup %d",
			num(int(at.pushes)), num(int(prate)), num(int(at.acked)), num(int(at.offline)), num(int(at.timeouts)), num(int(at.lost)), t.Dups))
		lat := "latency  receipt " + pcts(at.hist)
		r.mu.Lock()
		lat += "  device " + pcts(r.deviceHist)
		r.mu.Unlock()
		lines = append(lines, lat)
	}
	lines = append(lines, "nodes    "+nodeCounts(t.Nodes))
	r.mu.Lock()
	evs := append([]*eventRun(nil), r.events...)
	r.mu.Unlock()
	if len(evs) > 0 {
		res := r.eventResults(t)
		last := res[len(res)-1]
		s := fmt.Sprintf("event    %s %s at %.0fs", last.Kind, last.Target, last.AtS)
		switch {
		case last.Error != "":
			s += ": failed: " + last.Error
		case last.RecoveryS != nil:
			s += fmt.Sprintf(": recovered in %.2fs", *last.RecoveryS)
		case last.Affected > 0:
			s += fmt.Sprintf(": %d/%d back", last.Back, last.Affected)
		}
		lines = append(lines, s)
	}
	return lines
}

func pcts(h interface {
	TotalCount() int64
	ValueAtQuantile(float64) int64
}) string {
	if h.TotalCount() == 0 {
		return "-"
	}
	f := func(q float64) string { return strconv.FormatFloat(usToMS(h.ValueAtQuantile(q)), 'f', 2, 64) + "ms" }
	return "p50 " + f(50) + " p99 " + f(99)
}

func nodeCounts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " " + num(m[n])
	}
	return strings.Join(parts, "  ")
}

// num writes n with thousands separators.
func num(n int) string {
	s := strconv.Itoa(int(math.Abs(float64(n))))
	var b strings.Builder
	if n < 0 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
