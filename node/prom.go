package node

import (
	"sync/atomic"

	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/bus"
)

// collector exports the node's counters to Prometheus. It reads them at
// scrape time, so the node's hot paths only ever add to atomics. Every
// metric carries the node's ID as the label node.
type collector struct {
	n      *Node
	flat   []flatMetric
	descs  map[string]*prometheus.Desc
	bounds []float64 // seconds
}

type flatMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(n *Node) float64
}

func newCollector(n *Node) *collector {
	labels := prometheus.Labels{"node": n.cfg.ID}
	c := &collector{n: n, descs: map[string]*prometheus.Desc{}}
	counter := func(name, help string, v func(m *metrics) *atomicInt) {
		c.flat = append(c.flat, flatMetric{
			desc: prometheus.NewDesc("tether_node_"+name, help, nil, labels), typ: prometheus.CounterValue,
			value: func(n *Node) float64 { return float64(v(&n.metrics).Load()) },
		})
	}
	gauge := func(name, help string, v func(n *Node) float64) {
		c.flat = append(c.flat, flatMetric{
			desc: prometheus.NewDesc("tether_node_"+name, help, nil, labels), typ: prometheus.GaugeValue, value: v,
		})
	}
	gauge("connections", "Authenticated connections.", func(n *Node) float64 { return float64(n.hub.count()) })
	counter("accepted_total", "TCP connections accepted.", func(m *metrics) *atomicInt { return &m.accepted })
	counter("authenticated_total", "Connections authenticated.", func(m *metrics) *atomicInt { return &m.authenticated })
	counter("auth_failed_total", "Authentications refused (bad, expired or forbidden tokens).", func(m *metrics) *atomicInt { return &m.authFailed })
	counter("auth_timeouts_total", "Connections closed for not authenticating in time.", func(m *metrics) *atomicInt { return &m.authTimeouts })
	counter("closed_total", "Authenticated connections closed.", func(m *metrics) *atomicInt { return &m.closed })
	counter("ping_timeouts_total", "Connections closed as dead peers.", func(m *metrics) *atomicInt { return &m.pingTimeouts })
	counter("slow_consumers_total", "Connections dropped as slow consumers.", func(m *metrics) *atomicInt { return &m.slowConsumers })
	counter("replaced_total", "Connections closed by a newer connection of the same device.", func(m *metrics) *atomicInt { return &m.replaced })
	counter("bad_frames_total", "Malformed or unexpected frames from devices.", func(m *metrics) *atomicInt { return &m.badFrames })
	counter("pushes_total", "Push requests handled.", func(m *metrics) *atomicInt { return &m.pushes })
	counter("deliveries_total", "Push frames written to connections.", func(m *metrics) *atomicInt { return &m.deliveries })
	counter("acked_total", "Pushes acked by every connection they reached.", func(m *metrics) *atomicInt { return &m.acked })
	counter("ack_timeouts_total", "Pushes whose acks did not all come in time.", func(m *metrics) *atomicInt { return &m.ackTimeouts })
	counter("rejected_total", "Pushes and control messages refused (too large, bad request).", func(m *metrics) *atomicInt { return &m.rejected })
	counter("upstream_total", "Upstream messages published.", func(m *metrics) *atomicInt { return &m.upstream })
	counter("upstream_failed_total", "Upstream messages NATS did not take (the device got an unavailable error).", func(m *metrics) *atomicInt { return &m.upstreamFailed })
	counter("unknown_acks_total", "Acks for no push pending on their connection.", func(m *metrics) *atomicInt { return &m.unknownAcks })
	counter("late_acks_total", "Acks that came after their push's ack timeout.", func(m *metrics) *atomicInt { return &m.lateAcks })
	counter("too_big_total", "Frames from devices over max_frame_bytes.", func(m *metrics) *atomicInt { return &m.tooBig })
	counter("upgrade_failed_total", "WebSocket handshakes that failed (bad request, wrong path, timeout).", func(m *metrics) *atomicInt { return &m.upgradeFailed })
	counter("bad_control_total", "Node-to-node control messages refused (no valid signature).", func(m *metrics) *atomicInt { return &m.badControl })
	gauge("pending_pushes", "Pushes awaiting acks.", func(n *Node) float64 { return float64(n.table.len()) })
	gauge("subscriptions", "Device, group and service subscriptions held.", func(n *Node) float64 { return float64(n.subs.count()) })
	gauge("goroutines", "Goroutines of the process.", func(*Node) float64 { return float64(runtime.NumGoroutine()) })
	gauge("nats_connected", "1 while connected to NATS.", func(n *Node) float64 {
		if n.nc.IsConnected() {
			return 1
		}
		return 0
	})
	gauge("dispatch_queued", "Pushes waiting in the node's dispatch queues.", func(n *Node) float64 { return float64(n.queuedPushes()) })
	counter("dropped_total", "Pushes NATS dropped for the node because its queues were full (checked every stats interval).", func(m *metrics) *atomicInt { return &m.dropped })
	counter("accept_errors_total", "Failed accepts (out of file descriptors, usually); the node backs off up to 1s.", func(m *metrics) *atomicInt { return &m.acceptErrors })
	counter("conn_limited_total", "Connections refused by the per-address limits (429).", func(m *metrics) *atomicInt { return &m.connLimited })
	counter("handshake_too_large_total", "Handshakes over max_handshake_line_bytes or max_handshake_bytes (414, 431).", func(m *metrics) *atomicInt { return &m.handshakeTooBig })
	counter("rate_limited_total", "Device frames dropped over upstream_rate (rate_limited).", func(m *metrics) *atomicInt { return &m.rateLimited })
	counter("reply_refused_total", "Pushes and queries refused because their reply subject is not under node.reply_prefixes.", func(m *metrics) *atomicInt { return &m.replyRefused })
	counter("revoked_total", "Connections refused or closed because their token or device is revoked.", func(m *metrics) *atomicInt { return &m.revoked })
	svc := func(name, help string, extra ...string) {
		c.descs[name] = prometheus.NewDesc("tether_node_"+name, help, append([]string{"service"}, extra...), labels)
	}
	svc("service_connections", "Authenticated connections by service and tier (tiers outside node.tiers count as other, tokens without one as none).", "tier")
	svc("service_pushes_total", "Push requests handled, by service.")
	svc("service_deliveries_total", "Push frames written to connections, by service.")
	svc("service_push_bytes_total", "Push payload bytes written to connections, by service.")
	svc("service_acked_total", "Pushes acked by every connection they reached, by service.")
	svc("service_ack_timeouts_total", "Pushes that ended with acks missing from connections that did not close, by service.")
	svc("service_offline_total", "Push requests that found no connection on this node, by service.")
	svc("service_upstream_total", "Upstream messages from devices, by service.")
	svc("receipt_latency_seconds", "Push-to-receipt latency of acked pushes at the node: from the start of the delivery to the final reply, by service.")
	svc("ack_latency_seconds", "Time from a push's write to a device's ack, by service.")
	c.descs["disconnects"] = prometheus.NewDesc("tether_node_disconnects_total", "Authenticated connections closed, by reason.", []string{"reason"}, labels)
	c.descs["refused"] = prometheus.NewDesc("tether_node_refused_total", "Connections closed before they were authenticated, by reason.", []string{"reason"}, labels)
	for _, ms := range bus.LatencyBoundsMS {
		c.bounds = append(c.bounds, ms/1000)
	}
	return c
}

// atomicInt is the counters' type.
type atomicInt = atomic.Int64

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.flat {
		ch <- f.desc
	}
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	for _, f := range c.flat {
		ch <- prometheus.MustNewConstMetric(f.desc, f.typ, f.value(n))
	}
	cnt := func(name string, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v), labels...)
	}
	m := &n.metrics
	for name, s := range m.svcs {
		for i, t := range m.tiers {
			ch <- prometheus.MustNewConstMetric(c.descs["service_connections"], prometheus.GaugeValue, float64(s.conns[i].Load()), name, t)
		}
		cnt("service_pushes_total", s.requests.Load(), name)
		cnt("service_deliveries_total", s.pushes.Load(), name)
		cnt("service_push_bytes_total", s.bytes.Load(), name)
		cnt("service_acked_total", s.acked.Load(), name)
		cnt("service_ack_timeouts_total", s.timeouts.Load(), name)
		cnt("service_offline_total", s.offline.Load(), name)
		cnt("service_upstream_total", s.upstream.Load(), name)
		ch <- c.histogram(c.descs["receipt_latency_seconds"], &s.receipt, name)
		ch <- c.histogram(c.descs["ack_latency_seconds"], &s.ack, name)
	}
	for i, r := range disconnectReasons {
		cnt("disconnects", m.disconnects[i].Load(), r)
	}
	for i, r := range refuseReasons {
		cnt("refused", m.refused[i].Load(), r)
	}
}

func (c *collector) histogram(d *prometheus.Desc, h *latencyHist, service string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(c.bounds))
	var total uint64
	for i, b := range c.bounds {
		total += uint64(h.counts[i].Load())
		buckets[b] = total
	}
	total += uint64(h.counts[len(c.bounds)].Load())
	return prometheus.MustNewConstHistogram(d, total, float64(h.sum.Load())/1e9, buckets, service)
}
