package simulator

import (
	"encoding/binary"
	"net"
	"time"

	"github.com/gobwas/ws"

	"github.com/tetherhq/tether/protocol"
)

// leanPush handles a push frame in the node's usual layout (see
// protocol.ScanPush) without decoding it: it counts the push and acks it
// "ok" unless it says no_ack. It reports false, having done nothing, for
// any other frame.
func (d *Device) leanPush(nc net.Conn, p []byte) bool {
	id, noAck, ok := protocol.ScanPush(p)
	if !ok {
		return false
	}
	d.pushes.Add(1)
	if noAck {
		return true
	}
	d.wmu.Lock()
	d.leanAck = protocol.AppendAckID(d.leanAck[:0], id, "ok")
	d.leanBuf = appendMaskedText(d.leanBuf[:0], d.leanAck)
	_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := nc.Write(d.leanBuf)
	d.wmu.Unlock()
	if err == nil {
		d.acks.Add(1)
	}
	return true
}

// appendMaskedText appends payload (under 64 KiB) as one whole masked text
// frame, so that the frame takes one write.
func appendMaskedText(dst, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|byte(ws.OpText))
	if n < 126 {
		dst = append(dst, 0x80|byte(n))
	} else {
		dst = append(dst, 0x80|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	}
	mask := ws.NewMask()
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}
