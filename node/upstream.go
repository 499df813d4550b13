package node

import (
	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/protocol"
)

// onUpstream publishes a device's msg frame to its service's app servers.
func (n *Node) onUpstream(c *conn, f *protocol.Frame) {
	payload, err := f.Payload()
	if err != nil {
		n.metrics.badFrames.Add(1)
		c.send(textFrame(protocol.AppendError(nil, protocol.ErrBadFrame, err.Error(), f.ID)))
		return
	}
	m := &nats.Msg{Subject: n.subj.Upstream(c.service), Data: payload, Header: nats.Header{
		bus.HeaderService: {c.service},
		bus.HeaderDevice:  {c.device},
		bus.HeaderConn:    {c.id},
		bus.HeaderNode:    {n.cfg.ID},
	}}
	if c.tier != "" {
		m.Header[bus.HeaderTier] = []string{c.tier}
	}
	if f.ID != "" {
		m.Header[bus.HeaderMsgID] = []string{f.ID}
	}
	if err := n.nc.PublishMsg(m); err != nil {
		n.metrics.upstreamFailed.Add(1)
		c.send(textFrame(protocol.AppendError(nil, protocol.ErrUnavailable, "message not accepted: "+err.Error(), f.ID)))
		return
	}
	n.metrics.upstream.Add(1)
	if c.svcm != nil {
		c.svcm.upstream.Add(1)
	}
	if f.ID != "" {
		c.send(textFrame(protocol.AppendAck(nil, f.ID, "ok", nil)))
	}
}
