package telemetry

import (
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Snapshot returns the current values of the tether_* metrics in g, by
// series: "name" or `name{label="value",...}`; a histogram gives its
// _count and _sum. It is what the "stats" endpoint of a process's NATS
// micro service answers.
func Snapshot(g prometheus.Gatherer) map[string]float64 {
	out := map[string]float64{}
	mfs, _ := g.Gather() // a failed collector leaves out its own series only
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "tether_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := name + labelString(m.GetLabel())
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				ls := labelString(m.GetLabel())
				out[name+"_count"+ls] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+ls] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func labelString(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}
