package node

import (
	"strconv"

	"github.com/tetherhq/tether/protocol"
)

// handleFrame handles one complete data frame from a device.
func (n *Node) handleFrame(c *conn, payload []byte) {
	var f protocol.Frame
	authed := c.state.Load() != stateNew
	if err := protocol.Decode(payload, &f); err != nil {
		n.metrics.badFrames.Add(1)
		if !authed {
			c.fail(protocol.CloseBadFrame, protocol.ErrBadFrame, "the first frame must be {\"type\":\"auth\",\"token\":...}: "+err.Error())
			return
		}
		c.send(textFrame(protocol.AppendError(nil, protocol.ErrBadFrame, err.Error(), "")))
		return
	}
	if !authed {
		if f.Type != protocol.TypeAuth {
			n.metrics.badFrames.Add(1)
			c.fail(protocol.CloseBadFrame, protocol.ErrBadFrame, "the first frame must be {\"type\":\"auth\",\"token\":...}, got type "+strconv.Quote(f.Type))
			return
		}
		n.authenticate(c, f.Token, f.Service)
		return
	}
	switch f.Type {
	case protocol.TypeAck:
		n.onAck(c, &f)
	case protocol.TypeMsg:
		n.onUpstream(c, &f)
	case protocol.TypePing:
		c.send(textFrame(protocol.AppendPong(nil, f.ID)))
	case protocol.TypeAuth:
		c.send(textFrame(protocol.AppendError(nil, protocol.ErrAlreadyAuthed, "this connection is already authenticated", "")))
	default:
		n.metrics.badFrames.Add(1)
		c.send(textFrame(protocol.AppendError(nil, protocol.ErrUnknownType, "unknown frame type "+strconv.Quote(f.Type), f.ID)))
	}
}
