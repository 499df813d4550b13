package node

import (
	"context"
	"time"
)

// Observer hears of a node's connections and of its drain and stop. The
// node calls it synchronously: ConnAdded and ConnRemoved on its hot paths
// (they must not block: record and return), Draining and Stopped from
// Shutdown (they may do I/O, bounded by ctx).
//
// ConnAdded comes after the connection's welcome and connected event,
// ConnRemoved after its disconnected event; a connection's ConnRemoved
// never precedes its ConnAdded.
type Observer interface {
	// ConnAdded: a connection is authenticated and routable.
	ConnAdded(c ConnInfo)
	// ConnRemoved: a connection that was added has closed.
	ConnRemoved(c ConnInfo)
	// Draining: the node's graceful stop begins; it accepts no more
	// connections and is about to tell its devices to move.
	Draining(ctx context.Context)
	// Stopped: every connection is closed and the node serves nothing
	// more.
	Stopped(ctx context.Context)
}

// ConnInfo describes one connection.
type ConnInfo struct {
	ID      string
	Service string
	Device  string
	Tier    string
	Groups  []string
	// Since is when the connection authenticated.
	Since time.Time
}

func (c *conn) info() ConnInfo {
	return ConnInfo{
		ID: c.id, Service: c.service, Device: c.device, Tier: c.tier, Groups: c.groups,
		Since: time.Unix(0, c.since),
	}
}

// Conns returns the node's active connections.
func (n *Node) Conns() []ConnInfo {
	cs := n.hub.appendAll(nil)
	out := make([]ConnInfo, 0, len(cs))
	for _, c := range cs {
		if c.active() {
			out = append(out, c.info())
		}
	}
	return out
}

type noObserver struct{}

func (noObserver) ConnAdded(ConnInfo)       {}
func (noObserver) ConnRemoved(ConnInfo)     {}
func (noObserver) Draining(context.Context) {}
func (noObserver) Stopped(context.Context)  {}
