package node

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetherhq/tether/bus"
)

// metrics are the node's counters. They only grow; rates are derived by
// whoever reads them (the stats loop, Prometheus).
type metrics struct {
	accepted, upgradeFailed, authenticated, authFailed, authTimeouts atomic.Int64
	closed, pingTimeouts, slowConsumers, replaced, tooBig            atomic.Int64
	badFrames, unknownAcks, lateAcks, badControl                     atomic.Int64
	pushes, deliveries, acked, ackTimeouts, rejected                 atomic.Int64
	upstream, upstreamFailed                                         atomic.Int64
	dropped                                                          atomic.Int64 // pushes NATS dropped for the node (its queues were full)

	svcMu sync.RWMutex
	svcs  map[string]*svcCounters
}

type svcCounters struct {
	pushes, bytes, upstream atomic.Int64
}

// service returns the counters of a service, creating them on first use.
func (m *metrics) service(name string) *svcCounters {
	if name == "" {
		return nil
	}
	m.svcMu.RLock()
	s := m.svcs[name]
	m.svcMu.RUnlock()
	if s != nil {
		return s
	}
	m.svcMu.Lock()
	defer m.svcMu.Unlock()
	if m.svcs == nil {
		m.svcs = make(map[string]*svcCounters)
	}
	if s = m.svcs[name]; s == nil {
		s = &svcCounters{}
		m.svcs[name] = s
	}
	return s
}

func (m *metrics) pushed(s *svcCounters, delivered, size int) {
	m.pushes.Add(1)
	m.deliveries.Add(int64(delivered))
	if s != nil {
		s.pushes.Add(int64(delivered))
		s.bytes.Add(int64(delivered * size))
	}
}

func (m *metrics) serviceUpstream(name string) {
	if s := m.service(name); s != nil {
		s.upstream.Add(1)
	}
}

// Stats is a snapshot of a node's counters, for tests, benchmarks and
// `tether dev`.
type Stats struct {
	Connections   int
	Accepted      int64
	Authenticated int64
	AuthFailed    int64
	AuthTimeouts  int64
	Closed        int64
	PingTimeouts  int64
	SlowConsumers int64
	Replaced      int64
	BadFrames     int64
	Pushes        int64
	Deliveries    int64
	Acked         int64
	AckTimeouts   int64
	Rejected      int64
	Upstream      int64
	// UpstreamFailed counts upstream messages NATS did not take.
	UpstreamFailed int64
	// UnknownAcks counts acks for no pending push; LateAcks those past
	// their push's ack timeout.
	UnknownAcks, LateAcks int64
	// TooBig counts frames over max_frame_bytes; UpgradeFailed failed
	// WebSocket handshakes; BadControl refused node-to-node messages.
	TooBig, UpgradeFailed, BadControl int64
	Pending                           int
	Subscriptions                     int
	// Dropped counts pushes NATS dropped for the node because its queues
	// were full (as of the last stats interval).
	Dropped int64
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	m := &n.metrics
	return Stats{
		Connections:    n.hub.count(),
		Accepted:       m.accepted.Load(),
		Authenticated:  m.authenticated.Load(),
		AuthFailed:     m.authFailed.Load(),
		AuthTimeouts:   m.authTimeouts.Load(),
		Closed:         m.closed.Load(),
		PingTimeouts:   m.pingTimeouts.Load(),
		SlowConsumers:  m.slowConsumers.Load(),
		Replaced:       m.replaced.Load(),
		BadFrames:      m.badFrames.Load(),
		Pushes:         m.pushes.Load(),
		Deliveries:     m.deliveries.Load(),
		Acked:          m.acked.Load(),
		AckTimeouts:    m.ackTimeouts.Load(),
		Rejected:       m.rejected.Load(),
		Upstream:       m.upstream.Load(),
		UpstreamFailed: m.upstreamFailed.Load(),
		UnknownAcks:    m.unknownAcks.Load(),
		LateAcks:       m.lateAcks.Load(),
		TooBig:         m.tooBig.Load(),
		UpgradeFailed:  m.upgradeFailed.Load(),
		BadControl:     m.badControl.Load(),
		Pending:        n.table.len(),
		Subscriptions:  n.subs.count(),
		Dropped:        m.dropped.Load(),
	}
}

// trimLoop returns memory to the OS once the node has been quiet (no
// connection accepted, no push) for IdleTrim: a connect storm or a burst of
// pushes leaves garbage and free heap that the collector would otherwise
// keep until its next cycle, which an idle node may not run for minutes.
func (n *Node) trimLoop() {
	if n.cfg.IdleTrim <= 0 {
		return
	}
	t := time.NewTicker(n.cfg.IdleTrim / 4)
	defer t.Stop()
	var last int64
	var quietSince time.Time
	trimmed := true
	for {
		select {
		case <-n.quit:
			return
		case now := <-t.C:
			act := n.metrics.accepted.Load() + n.metrics.pushes.Load() + n.metrics.upstream.Load() + n.metrics.closed.Load()
			if act != last {
				last, quietSince, trimmed = act, now, false
				continue
			}
			if !trimmed && now.Sub(quietSince) >= n.cfg.IdleTrim {
				debug.FreeOSMemory()
				trimmed = true
			}
		}
	}
}

// statsLoop samples the load every loadWindow and publishes NodeStats
// every StatsInterval.
func (n *Node) statsLoop() {
	sample := time.NewTicker(loadWindow)
	defer sample.Stop()
	publish := time.NewTicker(n.cfg.StatsInterval)
	defer publish.Stop()
	prev := map[string][3]int64{}
	var lag time.Duration
	var queued int
	for {
		select {
		case <-n.quit:
			return
		case tick := <-sample.C:
			// How late this goroutine got to run: the scheduling delay
			// every goroutine of the node sees (its event-loop lag).
			now := time.Now()
			lag = max(lag, now.Sub(tick))
			queued = max(queued, n.queuedPushes())
			n.load.sample(now)
		case now := <-publish.C:
			n.checkDropped(now)
			st := n.snapshotStats(now, prev)
			st.LagMS = float64(lag.Microseconds()) / 1000
			st.Queued = max(queued, n.queuedPushes())
			lag, queued = 0, 0
			_ = bus.PublishNodeStats(n.nc, n.subj, st)
		}
	}
}

// checkDropped counts the pushes NATS dropped for this node since the last
// check (its queues were full) and, when there are any, says so on the
// node's events subject and in its log.
func (n *Node) checkDropped(now time.Time) {
	total := n.subs.dropped()
	if d, err := n.connSub.Dropped(); err == nil {
		total += int64(d)
	}
	delta := total - n.metrics.dropped.Swap(total)
	if delta <= 0 {
		return
	}
	msg := fmt.Sprintf("dropped %d pushes: the node's queues were full (max_queued_pushes %d, dispatch_queue %d per worker)", delta, n.cfg.MaxQueuedPushes, n.cfg.DispatchQueue)
	n.log.Warn(msg, "dropped_total", total)
	_ = bus.PublishNodeEvent(n.nc, n.subj, bus.NodeEvent{Node: n.cfg.ID, At: now.UTC(), Type: bus.NodeEventDropped, Dropped: delta, Total: total, Message: msg})
}

// queuedPushes is the number of pushes waiting to be handled.
func (n *Node) queuedPushes() int {
	k, _, _ := n.connSub.Pending()
	for _, ch := range n.dispatch {
		k += len(ch)
	}
	return k
}

func (n *Node) snapshotStats(now time.Time, prev map[string][3]int64) bus.NodeStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := bus.NodeStats{
		Node: n.cfg.ID, URL: n.url, At: now.UTC(), Services: map[string]bus.ServiceStats{},
		MemoryBytes: ms.Sys, Goroutines: runtime.NumGoroutine(), IntervalMS: n.cfg.StatsInterval.Milliseconds(),
		CPU: n.Load(), Class: n.cfg.Class, Capacity: n.cfg.Capacity,
	}
	for _, c := range n.hub.appendAll(nil) {
		s := st.Services[c.service]
		if s.Connections == nil {
			s.Connections = map[string]int{}
		}
		s.Connections[c.tier]++
		st.Services[c.service] = s
		st.Connections++
	}
	n.metrics.svcMu.RLock()
	for name, sc := range n.metrics.svcs {
		cur := [3]int64{sc.pushes.Load(), sc.bytes.Load(), sc.upstream.Load()}
		p := prev[name]
		s := st.Services[name]
		s.Pushes, s.Bytes, s.Upstream = cur[0]-p[0], cur[1]-p[1], cur[2]-p[2]
		if s.Connections == nil {
			s.Connections = map[string]int{}
		}
		st.Services[name] = s
		prev[name] = cur
	}
	n.metrics.svcMu.RUnlock()
	return st
}
