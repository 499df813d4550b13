package node

import (
	"errors"
	"sync"

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
	for _, extra := range n.extraSecrets {
		if !errors.Is(err, bus.ErrBadSignature) {
			break
		}
		// Signed with a secret being rotated in or out.
		to, err = bus.ParseTakeover(m, t, extra)
	}
	if err != nil {
		if errors.Is(err, bus.ErrBadSignature) {
			n.metrics.badControl.Add(1)
		}
		n.reject(m, bus.ErrCodeBadRequest)
		return
	}
	// The device is connected elsewhere now: a subscription of its
	// subject that only lingers here goes.
	n.subs.stopLinger(m.Subject)
	key := deviceKey(to.Service, to.Device)
	// First for the connections still authenticating (they check it when
	// they activate), then for those in the hub: a connection activating
	// meanwhile is caught by one or the other.
	n.authing.seen(key, to.Since, to.Conn)
	bufp := connPool.Get().(*[]*conn)
	cs := n.hub.appendKey((*bufp)[:0], key)
	for _, c := range cs {
		if c.id == to.Conn || c.state.Load() == stateClosed {
			continue
		}
		if newer(to.Since, to.Conn, c.since, c.id) {
			n.metrics.replaced.Add(1)
			c.fail(protocol.CloseReplaced, "replaced", "a newer connection of this device ("+to.Conn+") took over")
		} else if c.active() {
			// An older connection announced itself: its node may have
			// missed c's takeover (it was not subscribed to the device's
			// subject yet). Say it again, so that the older one goes.
			n.sendTakeover(c)
		}
	}
	clear(cs)
	*bufp = cs[:0]
	connPool.Put(bufp)
}

// newer reports whether connection (since, id) is newer than (since2, id2):
// the later start wins, and the larger connection ID breaks a tie, so
// that of any two connections of a device exactly one is the newer.
func newer(since int64, id string, since2 int64, id2 string) bool {
	return since > since2 || since == since2 && id > id2
}

// authing tracks, per device, the connections being authenticated on this
// node and the newest connection of that device announced meanwhile, so
// that a takeover is not lost because the connection it should close was
// not routable yet: the connection checks it when it activates.
type authing struct {
	mu sync.Mutex
	m  map[string]*authingDevice // by deviceKey
}

type authingDevice struct {
	n     int    // connections of the device being authenticated here
	since int64  // the newest connection announced while n > 0
	conn  string // its ID
}

func newAuthing() *authing { return &authing{m: map[string]*authingDevice{}} }

// begin records that a connection of key is being authenticated.
func (a *authing) begin(key string) {
	a.mu.Lock()
	d := a.m[key]
	if d == nil {
		d = &authingDevice{}
		a.m[key] = d
	}
	d.n++
	a.mu.Unlock()
}

// seen records a connection of key announced by a takeover, if one of the
// device's connections is being authenticated here.
func (a *authing) seen(key string, since int64, conn string) {
	a.mu.Lock()
	if d := a.m[key]; d != nil && newer(since, conn, d.since, d.conn) {
		d.since, d.conn = since, conn
	}
	a.mu.Unlock()
}

// end records that a connection of key is no longer being authenticated,
// and returns the newest connection announced meanwhile ("" when none).
func (a *authing) end(key string) (since int64, conn string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.m[key]
	if d == nil {
		return 0, ""
	}
	since, conn = d.since, d.conn
	if d.n--; d.n <= 0 {
		delete(a.m, key)
	}
	return since, conn
}

// endAuthing ends c's authentication in n.authing, once; it returns the
// newest connection of c's device announced meanwhile.
func (n *Node) endAuthing(c *conn) (since int64, conn string) {
	if !c.authing.CompareAndSwap(true, false) {
		return 0, ""
	}
	return n.authing.end(deviceKey(c.service, c.device))
}

// superseded reports whether c, about to become active, must give way: a
// newer connection of its device was announced while c authenticated, or
// is already here. c is in the hub already (see activate).
func (n *Node) superseded(c *conn) (by string, ok bool) {
	if since, id := n.endAuthing(c); id != "" && id != c.id && newer(since, id, c.since, c.id) {
		return id, true
	}
	bufp := connPool.Get().(*[]*conn)
	cs := n.hub.appendKey((*bufp)[:0], deviceKey(c.service, c.device))
	for _, o := range cs {
		if o != c && o.state.Load() != stateClosed && newer(o.since, o.id, c.since, c.id) {
			by, ok = o.id, true
			break
		}
	}
	clear(cs)
	*bufp = cs[:0]
	connPool.Put(bufp)
	return by, ok
}

// replaceOlder closes this node's connections of c's device that are older
// than c, at once rather than when c's takeover comes back through NATS.
func (n *Node) replaceOlder(c *conn) {
	bufp := connPool.Get().(*[]*conn)
	cs := n.hub.appendKey((*bufp)[:0], deviceKey(c.service, c.device))
	for _, o := range cs {
		if o != c && newer(c.since, c.id, o.since, o.id) && o.state.Load() != stateClosed {
			n.metrics.replaced.Add(1)
			o.fail(protocol.CloseReplaced, "replaced", "a newer connection of this device ("+c.id+") took over")
		}
	}
	clear(cs)
	*bufp = cs[:0]
	connPool.Put(bufp)
}
