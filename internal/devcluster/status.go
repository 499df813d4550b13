package devcluster

import (
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Summary is the cluster's state and totals; `tether dev --json` prints it.
type Summary struct {
	Devices   int `json:"devices"`
	Connected int `json:"connected"`
	Nodes     int `json:"nodes"`
	// Pushes counts pushes sent by the demo apps; each ends as exactly one
	// of acked, offline, closed, lost or errors. Closed also counts fan-out
	// pushes of which every connection acked or closed.
	Pushes  int64 `json:"pushes"`
	Acked   int64 `json:"acked"`
	Offline int64 `json:"offline"`
	Closed  int64 `json:"closed"`
	// Lost counts pushes delivered to a connection that neither acked nor
	// closed in time (status timeout, or partial with such a connection).
	Lost     int64 `json:"lost"`
	Errors   int64 `json:"errors"`
	Upstream int64 `json:"upstream"`
	Events   int64 `json:"events"`
	// P50MS, P99MS and MaxMS are push-to-receipt latencies of acked pushes
	// to a connection or a device.
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
	// FanoutP99MS is the same for group pushes (to a third of the fleet,
	// or all of it), whose receipts wait for every node (at least the
	// SDK's settle window).
	FanoutP99MS float64 `json:"fanout_p99_ms"`
	// PushesPerS is the push rate over the whole run.
	PushesPerS float64 `json:"pushes_per_s"`
	DurationS  float64 `json:"duration_s"`
	Reconnects int64   `json:"reconnects"`
	NATSURL    string  `json:"nats_url"`
	Directory  string  `json:"directory_url"`
	Store      string  `json:"store"`
	// Balancer is what the balancer did (absent when it does not run).
	Balancer *BalancerSummary `json:"balancer,omitempty"`
}

// BalancerSummary is the balancer's part of a Summary.
type BalancerSummary struct {
	// Decisions and Moves count the decisions the leader applied and the
	// moves they asked for.
	Decisions int64 `json:"decisions"`
	Moves     int64 `json:"moves"`
	// Leader is the leading balancer's ID.
	Leader string `json:"leader"`
	// Last is the latest decision's change, for people.
	Last string `json:"last,omitempty"`
}

// Summary returns the cluster's totals so far.
func (c *Cluster) Summary() Summary {
	s := Summary{Nodes: len(c.Nodes), DurationS: c.Uptime().Seconds(), NATSURL: c.NATS.ClientURL(), Store: "memory"}
	if c.opts.Redis != nil {
		s.Store = "redis"
	}
	if c.Directory != nil {
		s.Directory = c.Directory.URL()
	}
	for _, f := range c.fleets() {
		fs := f.Stats()
		s.Devices += fs.Devices
		s.Connected += fs.Connected
		s.Reconnects += fs.Reconnects
	}
	if c.balProc != nil {
		if b := c.balProc.Balancer(); b != nil {
			st := b.Status()
			s.Balancer = &BalancerSummary{Decisions: st.Decisions, Moves: st.Moves, Leader: st.Leader}
			if st.Last != nil {
				s.Balancer.Last = st.Last.Change
			}
		}
	}
	h, fan := hdrhistogram.New(1, 60_000_000, 3), hdrhistogram.New(1, 60_000_000, 3)
	for _, a := range c.Apps {
		s.Pushes += a.Pushes.Load()
		s.Acked += a.Acked.Load()
		s.Offline += a.Offline.Load()
		s.Closed += a.Closed.Load()
		s.Lost += a.Lost.Load()
		s.Errors += a.Errors.Load()
		s.Upstream += a.Upstream.Load()
		s.Events += a.Events.Load()
		uh, fh := a.histograms()
		h.Merge(uh)
		fan.Merge(fh)
	}
	if h.TotalCount() > 0 {
		s.P50MS = float64(h.ValueAtQuantile(50)) / 1000
		s.P99MS = float64(h.ValueAtQuantile(99)) / 1000
		s.MaxMS = float64(h.Max()) / 1000
	}
	if fan.TotalCount() > 0 {
		s.FanoutP99MS = float64(fan.ValueAtQuantile(99)) / 1000
	}
	if s.DurationS > 0 {
		s.PushesPerS = float64(s.Pushes) / s.DurationS
	}
	return s
}

// StatusLine renders a one-line live status; prev is the previous summary
// and dt the time since, for rates.
func StatusLine(s, prev Summary, dt time.Duration) string {
	rate := 0.0
	up := 0.0
	if dt > 0 {
		rate = float64(s.Pushes-prev.Pushes) / dt.Seconds()
		up = float64(s.Upstream-prev.Upstream) / dt.Seconds()
	}
	line := fmt.Sprintf("devices %d/%d | nodes %d | pushes %.0f/s | acked %d | offline %d | lost %d | p50 %.2fms p99 %.2fms | upstream %.0f/s",
		s.Connected, s.Devices, s.Nodes, rate, s.Acked, s.Offline, s.Lost, s.P50MS, s.P99MS, up)
	if b := s.Balancer; b != nil && b.Last != "" {
		last := b.Last
		if len(last) > 60 {
			last = last[:57] + "..."
		}
		line += fmt.Sprintf(" | balancer %d: %s", b.Decisions, last)
	}
	return line
}
