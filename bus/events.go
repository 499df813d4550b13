package bus

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// PublishEvent publishes ev on its service's events subject, with the
// Tether-Event and identity headers.
func PublishEvent(nc *nats.Conn, s Subjects, ev Event) error {
	m := nats.NewMsg(s.Events(ev.Service))
	m.Header.Set(HeaderEvent, ev.Type)
	m.Header.Set(HeaderService, ev.Service)
	m.Header.Set(HeaderDevice, ev.Device)
	m.Header.Set(HeaderConn, ev.Conn)
	m.Header.Set(HeaderNode, ev.Node)
	if ev.Tier != "" {
		m.Header.Set(HeaderTier, ev.Tier)
	}
	var err error
	if m.Data, err = json.Marshal(ev); err != nil {
		return fmt.Errorf("bus: event: %w", err)
	}
	if err := nc.PublishMsg(m); err != nil {
		return fmt.Errorf("bus: publish event: %w", err)
	}
	return nil
}

// ReasonNodeLost is the Reason of the disconnected events of connections
// whose node died without closing them.
const ReasonNodeLost = "node_lost"

// ReasonResync is the Reason of a connected event announced again for a
// connection that was reaped (and announced node_lost) while its node
// could not reach the store, and is in fact still open.
const ReasonResync = "resync"

// LostEvent is the disconnected event of a connection whose node died.
func LostEvent(service, device, conn, node, tier string, at, since time.Time) Event {
	return Event{
		Type: EventDisconnected, Service: service, Device: device, Conn: conn, Node: node,
		Tier: tier, At: at.UTC(), Reason: ReasonNodeLost, Since: since,
	}
}
