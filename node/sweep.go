package node

import (
	"time"

	"github.com/tetherhq/tether/protocol"
)

// expireLoop finishes pushes whose ack timeout passed, within expireEvery.
func (n *Node) expireLoop() {
	t := time.NewTicker(expireEvery)
	defer t.Stop()
	var ps []*pending
	for {
		select {
		case <-n.quit:
			return
		case now := <-t.C:
			ps = n.sweepPending(now, ps)
		}
	}
}

// expireEvery is the precision of ack timeouts.
const expireEvery = 5 * time.Millisecond

// sweepLoop enforces the auth deadline and liveness.
func (n *Node) sweepLoop() {
	every := min(n.cfg.PingInterval, n.cfg.AuthTimeout) / 4
	every = min(max(every, 5*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	var cs []*conn
	var swept time.Time
	for {
		select {
		case <-n.quit:
			return
		case now := <-t.C:
			cs = n.sweepConns(now, cs)
			n.subs.sweep(now)
			if now.Sub(swept) >= 5*time.Second {
				// Forget the addresses with nothing open and a full rate bucket.
				n.limits.sweep(now.UnixNano())
				swept = now
			}
		}
	}
}

func (n *Node) sweepConns(now time.Time, cs []*conn) []*conn {
	cs = cs[:0]
	n.preMu.Lock()
	for c := range n.pre {
		cs = append(cs, c)
	}
	n.preMu.Unlock()
	cs = n.hub.appendAll(cs)
	t := now.UnixNano()
	authTO, pingTO, pingEvery := n.cfg.AuthTimeout.Nanoseconds(), n.cfg.PingTimeout.Nanoseconds(), n.cfg.PingInterval.Nanoseconds()
	for _, c := range cs {
		switch c.state.Load() {
		case stateNew:
			if t-c.accepted > authTO {
				n.metrics.authTimeouts.Add(1)
				c.fail(protocol.CloseAuthTimeout, protocol.ErrAuthTimeout, "no auth within "+n.cfg.AuthTimeout.String())
			}
		case stateActive:
			if c.wrote.Swap(false) || c.lastWrite == 0 {
				c.lastWrite = t
			}
			last := c.lastRead.Load()
			switch {
			case t-last > pingTO:
				n.metrics.pingTimeouts.Add(1)
				// A close frame, in case the device is alive after all
				// (it rarely is); the writer drops the socket after it.
				c.closeWith(protocol.ClosePingTimeout, "ping_timeout")
			case (t-last > pingEvery || t-c.lastWrite > pingEvery) && t-c.lastPing > pingEvery:
				// Nothing heard from the device, or nothing sent to it,
				// for a ping interval: the ping asks for a sign of life,
				// and is one for a device that watches the node.
				c.lastPing = t
				c.send(pingFrame)
			}
		}
	}
	clear(cs)
	return cs
}
