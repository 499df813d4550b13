package simreport

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Chart geometry, in SVG user units.
const (
	chartW, chartH         = 960, 300
	padL, padR, padT, padB = 64, 150, 20, 40
)

// palette colours the series of a chart, in order.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// WriteHTML writes the report as one self-contained HTML page: the figures,
// the events, and SVG charts of the latency percentiles over time, the
// devices on each node over time (with the timed events marked), the
// connections made each second, and the receipts by status. It loads
// nothing: no script, no style sheet, no font.
func (r *Report) WriteHTML(w io.Writer) error {
	var b strings.Builder
	esc := html.EscapeString
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
	fmt.Fprintf(&b, "<title>tether simulate: %s</title>\n", esc(r.Scenario))
	b.WriteString(`<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00;font-weight:bold}.ok{color:#070}
svg.chart{width:100%;height:auto;border:1px solid #ddd;background:#fff}
pre{white-space:pre-wrap}
svg text{font:11px sans-serif;fill:#444}svg .grid{stroke:#eee}svg .axis{stroke:#888}
svg .event line{stroke:#b00;stroke-dasharray:4 3}svg .event text{fill:#b00}
</style>
</head>
<body>
`)
	fmt.Fprintf(&b, "<h1>tether simulate: %s</h1>\n", esc(r.Scenario))
	if r.Description != "" {
		fmt.Fprintf(&b, "<p>%s</p>\n", esc(r.Description))
	}
	var text strings.Builder
	_ = r.WriteText(&text)
	b.WriteString("<h2>Summary</h2>\n<table class=\"summary\">\n")
	for _, kv := range r.summaryRows() {
		cls := ""
		if kv[2] != "" {
			cls = " class=\"" + kv[2] + "\""
		}
		fmt.Fprintf(&b, "<tr><th>%s</th><td%s>%s</td></tr>\n", esc(kv[0]), cls, esc(kv[1]))
	}
	b.WriteString("</table>\n")

	if len(r.Events) > 0 {
		b.WriteString("<h2>Timed events</h2>\n<table class=\"events\">\n<tr><th>at</th><th>kind</th><th>target</th><th>affected</th><th>back</th><th>recovery</th><th></th></tr>\n")
		for _, e := range r.Events {
			rec := "-"
			if e.RecoveryS != nil {
				rec = fmt.Sprintf("%.2fs", *e.RecoveryS)
			}
			note := e.Note
			if e.Error != "" {
				note = "failed: " + e.Error
			}
			fmt.Fprintf(&b, "<tr><td class=\"n\">%.1fs</td><td>%s</td><td>%s</td><td class=\"n\">%d</td><td class=\"n\">%d</td><td class=\"n\">%s</td><td>%s</td></tr>\n",
				e.AtS, esc(e.Kind), esc(e.Target), e.Affected, e.Back, rec, esc(note))
		}
		b.WriteString("</table>\n")
	}

	b.WriteString("<h2>Push-to-receipt latency over time</h2>\n")
	b.WriteString(r.latencyChart())
	b.WriteString("<h2>Devices per node over time</h2>\n")
	b.WriteString(r.nodesChart())
	b.WriteString("<h2>Connections made per second</h2>\n")
	b.WriteString(r.connectsChart())
	b.WriteString("<h2>Receipts by status</h2>\n")
	b.WriteString(barChart("receipts", "receipts by status", r.Receipts))
	if len(r.Acks) > 0 {
		b.WriteString("<h2>Acks by result</h2>\n")
		b.WriteString(barChart("acks", "acks by result", r.Acks))
	}
	b.WriteString("<h2>Report</h2>\n<pre>")
	b.WriteString(esc(text.String()))
	b.WriteString("</pre>\n</body>\n</html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// summaryRows are the summary table's rows: label, value, CSS class.
func (r *Report) summaryRows() [][3]string {
	lost := ""
	if r.Lost > 0 {
		lost = "bad"
	}
	rows := [][3]string{
		{"started", r.StartedAt, ""},
		{"duration", fmt.Sprintf("%.1fs", r.DurationS), ""},
		{"cluster", r.Cluster, ""},
		{"devices", fmt.Sprintf("%s (%s connected at the end, peak %s)", num(int64(r.Devices)), num(int64(r.Connected)), num(int64(r.PeakConnected))), ""},
		{"connect time", r.Connect.text(), ""},
		{"reconnects", num(r.Reconnects), ""},
		{"pushes", fmt.Sprintf("%s (%.1f/s)", num(r.Pushes), r.PushesPerS), ""},
		{"receipts", counts(r.Receipts), ""},
		{"lost / duplicates", num(r.Lost) + " / " + num(r.Duplicates), lost},
		{"push to receipt", Latency{P50: r.P50MS, P99: r.P99MS, P999: r.P999MS, Max: r.MaxMS, Count: r.Acked}.text(), ""},
		{"push to device", r.Device.text(), ""},
	}
	for _, e := range r.Expectations {
		cls, verdict := "ok", "ok"
		if !e.OK {
			cls, verdict = "bad", "FAILED"
		}
		rows = append(rows, [3]string{"expect " + e.Key, fmt.Sprintf("%s: got %s, %s", e.Want, e.Got, verdict), cls})
	}
	for _, e := range r.Errors {
		rows = append(rows, [3]string{"error", e, "bad"})
	}
	return rows
}

// series is one line of a chart; nil values are gaps.
type series struct {
	name string
	ys   []*float64
}

func (r *Report) xs() []float64 {
	xs := make([]float64, len(r.Timeline))
	for i, s := range r.Timeline {
		xs[i] = s.TS
	}
	return xs
}

func (r *Report) latencyChart() string {
	get := func(f func(Sample) *float64) []*float64 {
		out := make([]*float64, len(r.Timeline))
		for i, s := range r.Timeline {
			out[i] = f(s)
		}
		return out
	}
	return r.lineChart("latency", "milliseconds", []series{
		{"p50", get(func(s Sample) *float64 { return s.P50MS })},
		{"p99", get(func(s Sample) *float64 { return s.P99MS })},
		{"p999", get(func(s Sample) *float64 { return s.P999MS })},
		{"device p99", get(func(s Sample) *float64 { return s.DeviceP99MS })},
	})
}

func (r *Report) nodesChart() string {
	names := map[string]bool{}
	for _, s := range r.Timeline {
		for n := range s.Nodes {
			names[n] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Slice(sorted, func(i, j int) bool { return naturalLess(sorted[i], sorted[j]) })
	var ss []series
	for _, n := range sorted {
		ys := make([]*float64, len(r.Timeline))
		for i, s := range r.Timeline {
			v := float64(s.Nodes[n])
			ys[i] = &v
		}
		ss = append(ss, series{n, ys})
	}
	total := make([]*float64, len(r.Timeline))
	for i, s := range r.Timeline {
		v := float64(s.Connected)
		total[i] = &v
	}
	ss = append(ss, series{"all devices", total})
	return r.lineChart("connections", "connected devices", ss)
}

func (r *Report) connectsChart() string {
	ys := make([]*float64, len(r.Timeline))
	for i, s := range r.Timeline {
		v := float64(s.Connects)
		ys[i] = &v
	}
	return r.lineChart("connects", "connections per second", []series{{"connects/s", ys}})
}

// lineChart draws series over the timeline's seconds, with the timed
// events as dashed vertical lines.
func (r *Report) lineChart(id, yLabel string, ss []series) string {
	xs := r.xs()
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg" role="img">`+"\n", id, chartW, chartH)
	fmt.Fprintf(&b, "<title>%s</title>\n", html.EscapeString(id+": "+yLabel))
	xMax := math.Max(r.DurationS, 1)
	if n := len(xs); n > 0 && xs[n-1] > xMax {
		xMax = xs[n-1]
	}
	yMax := 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			if y != nil && *y > yMax {
				yMax = *y
			}
		}
	}
	yStep := niceStep(yMax / 5)
	if yMax <= 0 {
		yMax, yStep = 1, 0.2
	}
	yTop := math.Ceil(yMax/yStep) * yStep
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	px := func(x float64) float64 { return padL + x/xMax*plotW }
	py := func(y float64) float64 { return padT + plotH - y/yTop*plotH }

	// grid and axes
	b.WriteString(`<g class="axes">` + "\n")
	for i := 0; float64(i)*yStep <= yTop+yStep/2; i++ {
		y := float64(i) * yStep
		fmt.Fprintf(&b, `<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			padL, py(y), chartW-padR, py(y), padL-6, py(y)+4, tick(y, yStep))
	}
	xStep := niceStep(xMax / 8)
	for i := 0; float64(i)*xStep <= xMax+xStep/2; i++ {
		x := float64(i) * xStep
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%.1f"/><text x="%.1f" y="%.1f" text-anchor="middle">%ss</text>`+"\n",
			px(x), padT, px(x), padT+plotH, px(x), padT+plotH+16, tick(x, xStep))
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`+"\n", padL, padT+plotH, chartW-padR, padT+plotH)
	fmt.Fprintf(&b, `<text x="14" y="%.1f" transform="rotate(-90 14 %.1f)" text-anchor="middle">%s</text>`+"\n",
		padT+plotH/2, padT+plotH/2, html.EscapeString(yLabel))
	b.WriteString("</g>\n")

	// events
	for _, e := range r.Events {
		x := px(e.AtS)
		fmt.Fprintf(&b, `<g class="event" data-event="%s"><line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f"/><text x="%.1f" y="%d">%s</text></g>`+"\n",
			html.EscapeString(e.Kind), x, padT, x, padT+plotH, x+3, padT+10, html.EscapeString(e.Kind+" "+e.Target))
	}

	// series
	for i, s := range ss {
		color := palette[i%len(palette)]
		var d strings.Builder
		pen := false
		for j, y := range s.ys {
			if y == nil || j >= len(xs) {
				pen = false
				continue
			}
			cmd := "L"
			if !pen {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, px(xs[j]), py(*y))
			pen = true
		}
		fmt.Fprintf(&b, `<g class="series" data-series="%s"><path d="%s" fill="none" stroke="%s" stroke-width="1.5"/></g>`+"\n",
			html.EscapeString(s.name), strings.TrimSpace(d.String()), color)
		// legend
		ly := padT + 14*i + 6
		fmt.Fprintf(&b, `<g class="legend"><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d">%s</text></g>`+"\n",
			chartW-padR+10, ly, chartW-padR+28, ly, color, chartW-padR+32, ly+4, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// barChart draws counts as horizontal bars, largest first.
func barChart(id, title string, m map[string]int64) string {
	keys := sortedKeys(m)
	const barH, gap = 22, 6
	h := padT + len(keys)*(barH+gap) + 10
	if len(keys) == 0 {
		h = 60
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" data-chart="%s" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg" role="img">`+"\n", id, chartW, h)
	fmt.Fprintf(&b, "<title>%s</title>\n", html.EscapeString(title))
	if len(keys) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="35">none</text>`+"\n", padL)
	}
	var top int64 = 1
	for _, k := range keys {
		top = max(top, m[k])
	}
	const labelW = 160
	plotW := float64(chartW - labelW - 120)
	for i, k := range keys {
		y := padT + i*(barH+gap)
		w := float64(m[k]) / float64(top) * plotW
		fmt.Fprintf(&b, `<g class="bar" data-key="%s" data-value="%d"><text x="%d" y="%d" text-anchor="end">%s</text><rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/><text x="%.1f" y="%d">%s</text></g>`+"\n",
			html.EscapeString(k), m[k], labelW-8, y+barH-6, html.EscapeString(k), labelW, y, math.Max(w, 1), barH, palette[i%len(palette)],
			float64(labelW)+w+6, y+barH-6, num(m[k]))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// tick writes an axis value with as many decimals as its step needs.
func tick(v, step float64) string {
	d := max(0, int(-math.Floor(math.Log10(step))))
	return strconv.FormatFloat(v, 'f', d, 64)
}

// naturalLess orders "node-2" before "node-10".
func naturalLess(a, b string) bool {
	pa, na := splitNum(a)
	pb, nb := splitNum(b)
	if pa != pb || na < 0 || nb < 0 {
		return a < b
	}
	return na < nb
}

func splitNum(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(s[i:])
	if err != nil {
		return s, -1
	}
	return s[:i], n
}
