package telemetry

import (
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// natsCollector exports a NATS connection's own figures.
type natsCollector struct {
	nc                                     *nats.Conn
	connected, reconnects, inMsgs, outMsgs *prometheus.Desc
	inBytes, outBytes                      *prometheus.Desc
}

// NewNATSCollector returns a collector of nc's figures: tether_nats_connected,
// tether_nats_reconnects_total and the messages and bytes in and out, as
// counted by the client since it connected.
func NewNATSCollector(nc *nats.Conn) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("tether_nats_"+name, help, nil, nil)
	}
	return &natsCollector{
		nc:         nc,
		connected:  d("connected", "1 while the process's NATS connection is up."),
		reconnects: d("reconnects_total", "Times the NATS connection reconnected."),
		inMsgs:     d("in_messages_total", "Messages received from NATS."),
		outMsgs:    d("out_messages_total", "Messages sent to NATS."),
		inBytes:    d("in_bytes_total", "Bytes received from NATS."),
		outBytes:   d("out_bytes_total", "Bytes sent to NATS."),
	}
}

func (c *natsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.reconnects, c.inMsgs, c.outMsgs, c.inBytes, c.outBytes} {
		ch <- d
	}
}

func (c *natsCollector) Collect(ch chan<- prometheus.Metric) {
	up := 0.0
	if c.nc.IsConnected() {
		up = 1
	}
	s := c.nc.Stats()
	ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(s.Reconnects))
	ch <- prometheus.MustNewConstMetric(c.inMsgs, prometheus.CounterValue, float64(s.InMsgs))
	ch <- prometheus.MustNewConstMetric(c.outMsgs, prometheus.CounterValue, float64(s.OutMsgs))
	ch <- prometheus.MustNewConstMetric(c.inBytes, prometheus.CounterValue, float64(s.InBytes))
	ch <- prometheus.MustNewConstMetric(c.outBytes, prometheus.CounterValue, float64(s.OutBytes))
}
