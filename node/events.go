package node

import (
	"time"

	"github.com/tetherhq/tether/bus"
)

// Announcement states of a connection (conn.announce): the connected event
// and the disconnected one are published in that order even when the
// connection closes while activate is announcing it.
const (
	announceNone     int32 = iota
	announceDone           // activate published "connected"
	announceDeferred       // finish ran first: activate says goodbye
)

// sayGoodbye publishes a closed connection's disconnected event and takes
// it out of the registry.
func (n *Node) sayGoodbye(c *conn) {
	n.publishEvent(c, bus.EventDisconnected)
	n.obs.ConnRemoved(c.info())
}

func (n *Node) publishEvent(c *conn, typ string) {
	ev := bus.Event{
		Type: typ, Service: c.service, Device: c.device, Conn: c.id, Node: n.cfg.ID,
		Tier: c.tier, Groups: c.groups, At: time.Now().UTC(),
	}
	if typ == bus.EventDisconnected {
		ev.Reason, ev.Code, ev.Since = c.closeReason, int(c.closeCode), time.Unix(0, c.since).UTC()
	}
	_ = bus.PublishEvent(n.nc, n.subj, ev)
}
