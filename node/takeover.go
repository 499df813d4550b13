package node

import (
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/protocol"
)

// One connection per device: when a device authenticates (and
// node.multiple_connections is off), its node publishes a takeover on the
// device's subject, and every node holding an older connection of that
// device closes it with 4005 "replaced". bus.Takeover is the message.

// sendTakeover announces c, just activated, to the nodes that may hold an
// older connection of its device.
func (n *Node) sendTakeover(c *conn) {
	t := bus.Takeover{Service: c.service, Device: c.device, Conn: c.id, Since: c.since}
	_ = n.nc.PublishMsg(t.Msg(n.subj, n.secret))
}

// onControl handles a node-to-node message (HeaderControl) that arrived on
// a push subject: only takeovers exist.
func (n *Node) onControl(t bus.Target, m *nats.Msg, ctl string) {
	if ctl != bus.ControlTakeover {
		n.reject(m, bus.ErrCodeBadRequest)
		return
	}
	to, err := bus.ParseTakeover(m, t, n.secret)
	if err != nil {
		if errors.Is(err, bus.ErrBadSignature) {
			n.metrics.badControl.Add(1)
		}
		n.reject(m, bus.ErrCodeBadRequest)
		return
	}
	bufp := connPool.Get().(*[]*conn)
	cs := n.hub.appendKey((*bufp)[:0], deviceKey(to.Service, to.Device))
	for _, c := range cs {
		if c.id != to.Conn && c.since <= to.Since {
			n.metrics.replaced.Add(1)
			c.fail(protocol.CloseReplaced, "replaced", "a newer connection of this device ("+to.Conn+") took over")
		}
	}
	clear(cs)
	*bufp = cs[:0]
	connPool.Put(bufp)
}
