package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/simulator"
)

// fleetCollector exports simulated appliances' figures.
type fleetCollector struct {
	stats                                    func() []simulator.FleetStats
	devices, connected, connects, reconnects *prometheus.Desc
	pushes, acks, sent, stopped              *prometheus.Desc
}

// NewFleetCollector returns a collector of the simulator's figures
// (tether_simulator_*), summed over the fleets stats returns.
func NewFleetCollector(stats func() []simulator.FleetStats) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("tether_simulator_"+name, help, nil, nil)
	}
	return &fleetCollector{
		stats:      stats,
		devices:    d("devices", "Simulated appliances."),
		connected:  d("connected", "Simulated appliances connected (welcomed) now."),
		connects:   d("connects_total", "Connections the appliances opened and got welcomed on."),
		reconnects: d("reconnects_total", "Reconnections after a connection was lost, refused or drained."),
		pushes:     d("pushes_total", "Pushes the appliances received."),
		acks:       d("acks_total", "Acks the appliances sent."),
		sent:       d("upstream_total", "Upstream messages the appliances sent."),
		stopped:    d("stopped_total", "Appliances that gave up (refused or replaced)."),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.connected, c.connects, c.reconnects, c.pushes, c.acks, c.sent, c.stopped} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	var t simulator.FleetStats
	for _, s := range c.stats() {
		t.Devices += s.Devices
		t.Connected += s.Connected
		t.Connects += s.Connects
		t.Reconnects += s.Reconnects
		t.Pushes += s.Pushes
		t.Acks += s.Acks
		t.Sent += s.Sent
		t.Stopped += s.Stopped
	}
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	k := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	g(c.devices, float64(t.Devices))
	g(c.connected, float64(t.Connected))
	k(c.connects, t.Connects)
	k(c.reconnects, t.Reconnects)
	k(c.pushes, t.Pushes)
	k(c.acks, t.Acks)
	k(c.sent, t.Sent)
	k(c.stopped, t.Stopped)
}
