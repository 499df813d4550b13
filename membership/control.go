package membership

import (
	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/node"
	"github.com/tetherhq/tether/store"
)

// onControl answers a request on the node's control subject
// (bus.ControlRequest). Drains run in the background: the reply says how
// many connections are moving, not that they have moved.
func (m *Member) onControl(msg *nats.Msg) {
	reply := func(r bus.ControlReply) {
		r.Node = m.n.ID()
		r.Connections = m.n.Connections()
		if r.State == "" {
			r.State = string(m.State())
		}
		if msg.Reply != "" {
			_ = msg.Respond(r.Encode())
		}
	}
	req, err := bus.ParseControlRequest(msg.Data)
	if err != nil {
		reply(bus.ControlReply{Error: err.Error()})
		return
	}
	switch req.Op {
	case bus.OpInfo:
		reply(bus.ControlReply{OK: true})
	case bus.OpDrain:
		o := node.DrainOptions{Service: req.Service, Tiers: req.Tiers, Count: req.Count, Grace: req.Grace(), Rate: req.Rate, Reason: req.Reason}
		k := m.countConns(o)
		m.drain(o)
		reply(bus.ControlReply{OK: true, Draining: k})
	case bus.OpSetState:
		ctx, cancel := m.storeCtx()
		defer cancel()
		state := store.NodeState(req.State)
		if err := m.reg.SetNodeState(ctx, m.n.ID(), state); err != nil {
			reply(bus.ControlReply{Error: "store: " + err.Error()})
			return
		}
		m.setState(state)
		m.mapChanged(bus.ReasonState)
		m.log.Info("state changed by control request", "state", state, "reason", req.Reason)
		k := 0
		if state != store.StateActive {
			// A node in standby or asleep serves nothing.
			k = m.n.Connections()
			m.drain(node.DrainOptions{Grace: req.Grace(), Rate: req.Rate, Reason: req.Reason})
		}
		reply(bus.ControlReply{OK: true, State: req.State, Draining: k})
	}
}

// drain runs a drain in the background, bounded by the Member's life.
func (m *Member) drain(o node.DrainOptions) {
	m.mu.Lock()
	if m.stopped {
		m.mu.Unlock()
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		_ = m.n.Drain(m.ctx, o)
	}()
}

// countConns is how many connections a drain with o moves.
func (m *Member) countConns(o node.DrainOptions) int {
	k := 0
	for _, c := range m.n.Conns() {
		if o.Matches(c) {
			k++
		}
	}
	if o.Count > 0 {
		k = min(k, o.Count)
	}
	return k
}
