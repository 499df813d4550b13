package simreport

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// CompareOptions tune what counts as a regression.
type CompareOptions struct {
	// Threshold is the relative change a latency, rate or recovery time
	// may take for the worse before it is a regression. Default 0.10.
	Threshold float64
}

// Row is one compared figure.
type Row struct {
	// Key names the figure (a report key, or "<event> recovery_s").
	Key string
	// A and B are its values (nil: not measured in that run).
	A, B *float64
	// Change is B-A relative to A (NaN when A is 0 or either is missing).
	Change float64
	// Regression is set when B is worse than A beyond the tolerance;
	// Improvement when better beyond it.
	Regression, Improvement bool
	// Note explains a regression that is not a number going the wrong way.
	Note string
}

// Comparison is the comparison of two reports.
type Comparison struct {
	A, B *Report
	Rows []Row
	// Warnings are differences that make the comparison doubtful (other
	// scenarios, other device counts).
	Warnings []string
}

// Regressions counts the rows that regressed.
func (c *Comparison) Regressions() int {
	n := 0
	for _, r := range c.Rows {
		if r.Regression {
			n++
		}
	}
	return n
}

// direction says which way a figure is better.
type direction int

const (
	info   direction = iota // neither: shown, never flagged
	lower                   // lower is better
	higher                  // higher is better
)

// figure is a compared figure: how to read it, which way is better, and
// the absolute change below which nothing is flagged.
type figure struct {
	key      string
	dir      direction
	relative bool    // judged by relative change (else any change beyond abs)
	abs      float64 // changes up to this are noise
	get      func(*Report) *float64
}

func f64(v float64) *float64 { return &v }

func share(n, of int64) *float64 {
	if of <= 0 {
		return nil
	}
	return f64(float64(n) / float64(of))
}

var figures = []figure{
	{"devices", info, false, 0, func(r *Report) *float64 { return f64(float64(r.Devices)) }},
	{"connected_share", higher, false, 0.001, func(r *Report) *float64 { return share(int64(r.Connected), int64(r.Devices)) }},
	{"ramp_s", lower, true, 0.5, func(r *Report) *float64 { return r.RampS }},
	{"connect_p99_ms", lower, true, 2, func(r *Report) *float64 { return r.Connect.P99 }},
	{"reconnects", lower, true, 10, func(r *Report) *float64 { return f64(float64(r.Reconnects)) }},
	{"stopped", lower, false, 0, func(r *Report) *float64 { return f64(float64(r.Stopped)) }},
	{"pushes", info, false, 0, func(r *Report) *float64 { return f64(float64(r.Pushes)) }},
	{"pushes_per_s", higher, true, 1, func(r *Report) *float64 { return f64(r.PushesPerS) }},
	{"acked_share", higher, false, 0.001, func(r *Report) *float64 { return share(r.Acked, r.Pushes) }},
	{"offline_share", lower, false, 0.001, func(r *Report) *float64 { return share(r.Offline, r.Pushes) }},
	{"timeout_share", lower, false, 0.001, func(r *Report) *float64 { return share(r.Timeouts, r.Pushes) }},
	{"lost", lower, false, 0, func(r *Report) *float64 { return f64(float64(r.Lost)) }},
	{"duplicates", lower, false, 0, func(r *Report) *float64 { return f64(float64(r.Duplicates)) }},
	{"p50_ms", lower, true, 0.5, func(r *Report) *float64 { return r.P50MS }},
	{"p99_ms", lower, true, 1, func(r *Report) *float64 { return r.P99MS }},
	{"p999_ms", lower, true, 2, func(r *Report) *float64 { return r.P999MS }},
	{"device_p99_ms", lower, true, 1, func(r *Report) *float64 { return r.Device.P99 }},
	{"fanout_p99_ms", lower, true, 5, func(r *Report) *float64 { return r.Fanout.P99 }},
}

// Compare compares run b with run a.
func Compare(a, b *Report, o CompareOptions) *Comparison {
	if o.Threshold <= 0 {
		o.Threshold = 0.10
	}
	c := &Comparison{A: a, B: b}
	if a.Scenario != b.Scenario {
		c.Warnings = append(c.Warnings, fmt.Sprintf("different scenarios: %q and %q", a.Scenario, b.Scenario))
	}
	if a.Devices != b.Devices {
		c.Warnings = append(c.Warnings, fmt.Sprintf("different device counts: %d and %d", a.Devices, b.Devices))
	}
	for _, f := range figures {
		c.Rows = append(c.Rows, judge(f.key, f.dir, f.relative, f.abs, o.Threshold, f.get(a), f.get(b)))
	}
	// Events, matched by kind and order of that kind.
	seen := map[string]int{}
	for _, ea := range a.Events {
		n := seen[ea.Kind]
		seen[ea.Kind]++
		eb, ok := nthEvent(b.Events, ea.Kind, n)
		key := fmt.Sprintf("%s@%gs recovery_s", ea.Kind, ea.AtS)
		if !ok {
			c.Warnings = append(c.Warnings, fmt.Sprintf("event %s at %gs is not in the second run", ea.Kind, ea.AtS))
			continue
		}
		row := judge(key, lower, true, 0.5, o.Threshold*2, ea.RecoveryS, eb.RecoveryS)
		if ea.RecoveryS != nil && eb.RecoveryS == nil && eb.Error == "" {
			row.Regression, row.Note = true, "recovered in the first run, not in the second"
		}
		if ea.Error == "" && eb.Error != "" {
			row.Regression, row.Note = true, "failed: "+eb.Error
		}
		c.Rows = append(c.Rows, row)
	}
	if a.Failed() != b.Failed() && b.Failed() {
		c.Rows = append(c.Rows, Row{Key: "expectations", Regression: true, Note: "met in the first run, failed in the second", Change: math.NaN()})
	}
	return c
}

func nthEvent(es []Event, kind string, n int) (Event, bool) {
	for _, e := range es {
		if e.Kind == kind {
			if n == 0 {
				return e, true
			}
			n--
		}
	}
	return Event{}, false
}

// judge compares one figure.
func judge(key string, dir direction, relative bool, abs, threshold float64, a, b *float64) Row {
	r := Row{Key: key, A: a, B: b, Change: math.NaN()}
	if a == nil || b == nil {
		if dir != info && a != nil && b == nil {
			r.Note = "not measured in the second run"
		}
		return r
	}
	if *a != 0 {
		r.Change = (*b - *a) / math.Abs(*a)
	}
	if dir == info {
		return r
	}
	diff := *b - *a
	if dir == higher {
		diff = -diff // positive: worse
	}
	if math.Abs(diff) <= abs {
		return r
	}
	worse := diff > 0
	if relative && *a != 0 && math.Abs(diff)/math.Abs(*a) <= threshold {
		return r
	}
	r.Regression, r.Improvement = worse, !worse
	return r
}

// Write prints the comparison for people: every figure, its change, and
// the regressions flagged.
func (c *Comparison) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "A: %s, %s, %d devices, %.1fs\n", c.A.Scenario, c.A.StartedAt, c.A.Devices, c.A.DurationS)
	fmt.Fprintf(&b, "B: %s, %s, %d devices, %.1fs\n", c.B.Scenario, c.B.StartedAt, c.B.Devices, c.B.DurationS)
	for _, wn := range c.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", wn)
	}
	fmt.Fprintf(&b, "\n%-28s %14s %14s %10s\n", "figure", "A", "B", "change")
	for _, r := range c.Rows {
		change := ""
		if !math.IsNaN(r.Change) {
			change = fmt.Sprintf("%+.1f%%", r.Change*100)
		}
		flag := ""
		switch {
		case r.Regression:
			flag = "  REGRESSION"
		case r.Improvement:
			flag = "  better"
		}
		if r.Note != "" {
			flag += " (" + r.Note + ")"
		}
		fmt.Fprintf(&b, "%-28s %14s %14s %10s%s\n", r.Key, value(r.A), value(r.B), change, flag)
	}
	if n := c.Regressions(); n > 0 {
		fmt.Fprintf(&b, "\n%d regression(s)\n", n)
	} else {
		b.WriteString("\nno regression\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func value(v *float64) string {
	if v == nil {
		return "-"
	}
	if *v == math.Trunc(*v) && math.Abs(*v) < 1e15 {
		return num(int64(*v))
	}
	return fmt.Sprintf("%.3f", *v)
}
