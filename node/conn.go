package node

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/tetherhq/tether/internal/ratelimit"
	"github.com/tetherhq/tether/protocol"
)

// Connection states.
const (
	stateNew     uint32 = iota // upgraded, not authenticated yet
	stateAuthing               // token verified, subscriptions being confirmed
	stateActive                // welcomed, registered, routable
	stateClosed                // terminated; nothing more is sent or routed
)

// conn is one device connection. No goroutine is parked on it while it is
// idle: a poller reads it when the kernel says it is readable (see
// poll_linux.go), and a writer goroutine exists only while the socket
// cannot take what is queued for it.
type conn struct {
	n   *Node
	nc  net.Conn
	raw syscall.RawConn // nc's raw descriptor, for reads that never park
	fd  int32           // nc's descriptor number, for writes; -1 if none

	// Identity, set once while authenticating and never changed after.
	id      string
	service string
	device  string
	tier    string
	groups  []string
	since   int64 // unix nanos of the authentication
	// svcm are the service's counters (nil only for a service outside the
	// keyring, which no token names); tierIdx the tier's label index.
	svcm    *svcCounters
	tierIdx uint8
	// The token's ID (jti) and the start of its chain (FirstIssued, unix
	// seconds; 0 unknown), to match revocations against.
	tokenID string
	first   int64

	// Per-address limits (limits.go): the address the connection counts
	// under, whether it counts at all, and whether it still counts as
	// unauthenticated.
	addr    netip.Addr
	limited bool
	unauth  atomic.Bool
	// certName is the subject common name of the device's verified TLS
	// client certificate, if it sent one.
	certName string
	// up limits the frames the device sends (node.upstream_rate); its
	// reader owns it.
	up ratelimit.Bucket

	state    atomic.Uint32
	authing  atomic.Bool  // counted in Node.authing (see begin/endAuthing)
	subState atomic.Int32 // subNone, subHeld, subReleased
	announce atomic.Int32 // announceNone, announceDone, announceDeferred
	accepted int64        // unix nanos
	lastRead atomic.Int64 // unix nanos of the last bytes read
	lastPing int64        // unix nanos; touched by the sweeper only
	// wrote is set by every write to the socket; the sweeper clears it
	// and keeps the time it saw it in lastWrite (sweeper only).
	wrote     atomic.Bool
	lastWrite int64

	// Read side, owned by whoever reads the connection (its poller loop).
	rs   *readState           // partial input; nil almost always
	pfd  int32                // descriptor number, for the poller (loop.mu)
	pgen int32                // poller registration generation (loop.mu)
	loop atomic.Pointer[loop] // the epoll loop reading it

	wmu        sync.Mutex
	wq         *outQueue // frames the socket did not take yet; nil when none
	writing    bool
	wclosed    bool // no more frames are queued
	closeAfter bool // the socket is closed once the queue is written

	pmu  sync.Mutex
	pend []pendRef // pushes awaiting this connection's ack

	// Set by markClosed, read by finish.
	closeCode   protocol.CloseCode
	closeReason string
	wasActive   bool
}

// readState holds what a read left incomplete. It exists only while there
// is some, so an idle connection carries none.
type readState struct {
	rbuf   []byte // an incomplete frame carried over to the next read
	frag   []byte // a fragmented message being reassembled
	fragOp ws.OpCode
}

// outQueue holds the frames waiting for a slow socket.
type outQueue struct {
	frames [][]byte
	bytes  int
}

func (c *conn) queued() int {
	if c.wq == nil {
		return 0
	}
	return c.wq.bytes
}

// enqueue adds frames to the queue. c.wmu held.
func (c *conn) enqueue(frames ...[]byte) {
	if c.wq == nil {
		c.wq = &outQueue{}
	}
	for _, f := range frames {
		c.wq.frames = append(c.wq.frames, f)
		c.wq.bytes += len(f)
	}
}

type pendRef struct {
	id       uint64
	deadline int64
}

func (c *conn) active() bool { return c.state.Load() == stateActive }

// sendResult says what became of a frame given to write.
type sendResult uint8

const (
	sendRefused sendResult = iota // the connection takes no more frames
	sendWritten                   // the kernel took the whole frame
	sendQueued                    // (part of) the frame is queued: it is the queue's now
)

// send queues a complete frame, or writes it at once when nothing is
// queued and the socket takes it. It never blocks on the socket; it returns
// false when the connection no longer takes frames. A connection whose
// queue would exceed MaxPendingBytes is closed as a slow consumer. frame
// may be shared with other connections and is never modified.
func (c *conn) send(frame []byte) bool { return c.write(frame) != sendRefused }

// write is send, telling whether frame was written at once (and may be
// reused by the caller) or queued.
func (c *conn) write(frame []byte) sendResult {
	c.wmu.Lock()
	r, after := c.writeLocked(frame)
	c.wmu.Unlock()
	c.afterWrite(after)
	if r != sendRefused && !c.wrote.Load() {
		c.wrote.Store(true)
	}
	return r
}

// What must follow a write once c.wmu is released.
type writeFollowUp uint8

const (
	followNone writeFollowUp = iota
	followStartWriter
	followWriteError
	followSlowConsumer
)

// writeLocked is write with c.wmu held; the caller runs afterWrite with
// its second result once it has released the lock.
func (c *conn) writeLocked(frame []byte) (sendResult, writeFollowUp) {
	if c.wclosed {
		return sendRefused, followNone
	}
	if !c.writing {
		n, err := c.writeNow(frame)
		if n == len(frame) {
			return sendWritten, followNone
		}
		if err != nil && !errors.Is(err, syscall.EAGAIN) {
			c.wclosed = true
			return sendRefused, followWriteError
		}
		frame = frame[n:]
	}
	if c.queued()+len(frame) > c.n.cfg.MaxPendingBytes {
		c.wclosed = true
		c.wq = nil
		return sendRefused, followSlowConsumer
	}
	c.enqueue(frame)
	if c.writing {
		return sendQueued, followNone
	}
	c.writing = true
	return sendQueued, followStartWriter
}

// afterWrite does what writeLocked left to do. c.wmu not held.
func (c *conn) afterWrite(f writeFollowUp) {
	switch f {
	case followStartWriter:
		c.startWriter()
	case followWriteError:
		c.terminate(protocol.CloseInternal, "write_error", false)
		_ = c.nc.Close() // also when a close was already under way
	case followSlowConsumer:
		c.n.metrics.slowConsumers.Add(1)
		c.terminate(protocol.CloseSlowConsumer, "slow_consumer", false)
		_ = c.nc.Close() // also when a close was already under way
	}
}

// writeNow writes b to the socket without waiting: it returns how much the
// kernel took, and EAGAIN when it took less. c.wmu held. It writes to the
// descriptor directly: every path that closes the socket first sets
// wclosed under c.wmu, so the descriptor cannot be closed (and its number
// reused) while a write is under way.
func (c *conn) writeNow(b []byte) (int, error) {
	if c.fd < 0 {
		return 0, syscall.EAGAIN
	}
	n, err := rawWrite(uintptr(c.fd), b)
	if n < 0 {
		n = 0
	}
	if err == nil && n < len(b) {
		err = syscall.EAGAIN
	}
	return n, err
}

// sendLast writes final frames and has the socket closed after them.
// Further sends are refused.
func (c *conn) sendLast(frames ...[]byte) {
	c.wmu.Lock()
	if c.wclosed {
		c.wmu.Unlock()
		return
	}
	c.wclosed = true
	c.closeAfter = true
	c.enqueue(frames...)
	start := !c.writing
	c.writing = true
	c.wmu.Unlock()
	if start {
		c.startWriter()
	}
}

// startWriter runs writeLoop on a goroutine the node owns. When the node
// is past starting goroutines (the very end of Shutdown, when every
// connection is closed already), the socket is closed instead.
func (c *conn) startWriter() {
	if !c.n.spawn(c.writeLoop) {
		c.wmu.Lock()
		c.wclosed, c.wq, c.writing = true, nil, false
		c.wmu.Unlock()
		_ = c.nc.Close()
	}
}

// writeLoop writes the queue with blocking writes bounded by WriteTimeout,
// then exits. It runs only while there is something the socket did not
// take at once.
func (c *conn) writeLoop() {
	var spare [][]byte
	for {
		c.wmu.Lock()
		if c.wq == nil || len(c.wq.frames) == 0 {
			c.writing = false
			c.wq = nil
			fin := c.closeAfter
			c.wmu.Unlock()
			if fin {
				_ = c.nc.Close()
			}
			return
		}
		q := c.wq.frames
		c.wq.frames, c.wq.bytes = spare[:0], 0
		c.wmu.Unlock()

		_ = c.nc.SetWriteDeadline(time.Now().Add(c.n.cfg.WriteTimeout))
		bufs := net.Buffers(q)
		_, err := bufs.WriteTo(c.nc)
		clear(q)
		spare = q
		if err != nil {
			c.wmu.Lock()
			c.wclosed = true
			c.wq = nil
			c.writing = false
			c.wmu.Unlock()
			_ = c.nc.Close()
			c.terminate(protocol.CloseInternal, "write_error", false)
			return
		}
	}
}

// fail sends an error frame and closes with code. Used for terminal errors.
func (c *conn) fail(code protocol.CloseCode, errCode, msg string) {
	frame := textFrame(protocol.AppendError(nil, errCode, msg, ""))
	c.closeWith(code, errCode, frame)
}

// closeWith terminates the connection, writing extra frames (an error or
// reconnect frame) and a close frame before the socket is closed.
func (c *conn) closeWith(code protocol.CloseCode, reason string, extra ...[]byte) {
	if !c.markClosed(code, reason) {
		return
	}
	c.n.stopReading(c)
	frames := append(extra, closeFrame(code, reason))
	c.sendLast(frames...)
	c.n.finish(c)
}

// terminate ends the connection. With flush false the socket is closed at
// once (slow consumers, dead peers, write errors).
func (c *conn) terminate(code protocol.CloseCode, reason string, flush bool) {
	if flush {
		c.closeWith(code, reason)
		return
	}
	if !c.markClosed(code, reason) {
		return
	}
	c.n.stopReading(c)
	c.wmu.Lock()
	c.wclosed = true
	c.wq = nil
	c.wmu.Unlock()
	_ = c.nc.Close()
	c.n.finish(c)
}

// markClosed moves the connection to stateClosed; it reports false when it
// already was. Whether it was active is kept for finish.
func (c *conn) markClosed(code protocol.CloseCode, reason string) bool {
	for {
		s := c.state.Load()
		if s == stateClosed {
			return false
		}
		if c.state.CompareAndSwap(s, stateClosed) {
			c.closeCode, c.closeReason = code, reason
			c.wasActive = s == stateActive
			return true
		}
	}
}

// consume parses the frames in data (bytes just read from the socket) and
// handles them. data may be a shared read buffer: nothing of it is kept
// past the call, except an incomplete frame, which is copied. It returns
// false once the connection is closed.
func (c *conn) consume(data []byte) bool {
	c.lastRead.Store(time.Now().UnixNano())
	carried := c.rs != nil && len(c.rs.rbuf) > 0
	if carried {
		c.rs.rbuf = append(c.rs.rbuf, data...)
		data = c.rs.rbuf
	}
	maxFrame := c.n.cfg.MaxFrameBytes
	for len(data) > 0 {
		h, hlen, ok := parseHeader(data)
		if !ok {
			break // incomplete header
		}
		if h.Length > int64(maxFrame) || (h.OpCode == ws.OpContinuation && c.rs != nil && int64(len(c.rs.frag))+h.Length > int64(maxFrame)) {
			c.n.metrics.tooBig.Add(1)
			c.closeWith(protocol.CloseTooBig, protocol.ErrTooBig,
				textFrame(protocol.AppendError(nil, protocol.ErrTooBig, "frame larger than max_frame", "")))
			return false
		}
		if h.OpCode.IsControl() && (h.Length > 125 || !h.Fin) {
			// RFC 6455 5.5: control frames carry at most 125 bytes and
			// are never fragmented.
			c.closeWith(protocol.CloseProtocolError, "bad control frame")
			return false
		}
		end := hlen + int(h.Length)
		if len(data) < end {
			break // incomplete payload
		}
		payload := data[hlen:end]
		data = data[end:]
		if !h.Masked {
			c.closeWith(protocol.CloseProtocolError, "unmasked client frame")
			return false
		}
		ws.Cipher(payload, h.Mask, 0)
		if !c.frame(h, payload) {
			return false
		}
	}
	// Keep an incomplete frame for the next read.
	switch {
	case len(data) == 0:
		if c.rs != nil {
			c.rs.rbuf = nil
			if c.rs.frag == nil {
				c.rs = nil
			}
		}
	case carried:
		c.rs.rbuf = c.rs.rbuf[:copy(c.rs.rbuf, data)] // data is the tail of rbuf
	default:
		if c.rs == nil {
			c.rs = &readState{}
		}
		c.rs.rbuf = append(c.rs.rbuf[:0], data...)
	}
	return c.state.Load() != stateClosed
}

// parseHeader parses a frame header at the start of b; ok is false when b
// holds less than a whole header.
func parseHeader(b []byte) (h ws.Header, n int, ok bool) {
	if len(b) < 2 {
		return h, 0, false
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, false
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, false
		}
		h.Length = int64(binary.BigEndian.Uint64(b[2:]) & (1<<63 - 1))
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, false
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, true
}

// frame handles one unmasked frame; it returns false once the connection
// is closed.
func (c *conn) frame(h ws.Header, payload []byte) bool {
	if h.Rsv != 0 {
		c.closeWith(protocol.CloseProtocolError, "reserved bits set")
		return false
	}
	switch h.OpCode {
	case ws.OpPing:
		if !c.n.allowFrame(c) {
			return true // over upstream_rate: no pong
		}
		c.send(controlFrame(ws.OpPong, payload))
		return true
	case ws.OpPong:
		return true
	case ws.OpClose:
		c.clientClosed(payload)
		return false
	case ws.OpText, ws.OpBinary:
		if c.rs != nil && c.rs.frag != nil {
			c.closeWith(protocol.CloseProtocolError, "new message inside a fragmented one")
			return false
		}
		if !h.Fin {
			if c.rs == nil {
				c.rs = &readState{}
			}
			c.rs.frag = append(make([]byte, 0, len(payload)*2), payload...)
			c.rs.fragOp = h.OpCode
			return true
		}
	case ws.OpContinuation:
		if c.rs == nil || c.rs.frag == nil {
			c.closeWith(protocol.CloseProtocolError, "continuation without a message")
			return false
		}
		c.rs.frag = append(c.rs.frag, payload...)
		if !h.Fin {
			return true
		}
		payload, h.OpCode, c.rs.frag = c.rs.frag, c.rs.fragOp, nil
	default:
		c.closeWith(protocol.CloseProtocolError, "unknown opcode")
		return false
	}
	if h.OpCode == ws.OpText && !utf8.Valid(payload) {
		c.closeWith(protocol.CloseInvalidData, "text frame is not UTF-8")
		return false
	}
	c.n.handleFrame(c, payload)
	return c.state.Load() != stateClosed
}

// clientClosed answers a device's close frame. The device's code goes into
// the disconnected event; the node's own close frame says 1000 (or 1002 or
// 1007 for a malformed close frame), never the device's code back, which
// would make the node seem to close for the device's own reasons.
func (c *conn) clientClosed(payload []byte) {
	code, reply := protocol.CloseNormal, protocol.CloseNormal
	switch {
	case len(payload) == 1:
		code, reply = protocol.CloseProtocolError, protocol.CloseProtocolError
	case len(payload) >= 2:
		code = protocol.CloseCode(binary.BigEndian.Uint16(payload))
		if !validClientCloseCode(code) {
			reply = protocol.CloseProtocolError
		} else if !utf8.Valid(payload[2:]) {
			reply = protocol.CloseInvalidData
		}
	}
	if !c.markClosed(code, "client_closed") {
		return
	}
	c.n.stopReading(c)
	c.sendLast(closeFrame(reply, ""))
	c.n.finish(c)
}

// validClientCloseCode reports whether a peer may send code in a close
// frame (RFC 6455 7.4: not 1004-1006, 1015, or an unassigned code below
// 3000).
func validClientCloseCode(code protocol.CloseCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// readFailed ends a connection whose socket read failed or reached EOF.
func (c *conn) readFailed(err error) {
	reason := "connection_lost"
	if err == nil || errors.Is(err, io.EOF) {
		reason = "client_gone"
	}
	c.terminate(protocol.CloseCode(1006), reason, false)
}

// addPend records that id awaits this connection's ack.
func (c *conn) addPend(id uint64, deadline int64) {
	c.pmu.Lock()
	if len(c.pend) >= 32 {
		// Drop what has expired, so a device that never acks cannot grow it.
		now := time.Now().UnixNano()
		kept := c.pend[:0]
		for _, p := range c.pend {
			if p.deadline > now {
				kept = append(kept, p)
			}
		}
		clear(c.pend[len(kept):])
		c.pend = kept
	}
	c.pend = append(c.pend, pendRef{id: id, deadline: deadline})
	c.pmu.Unlock()
}

// takePend removes id from the connection's pending acks; it reports
// whether id was there.
func (c *conn) takePend(id uint64) bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	for i, p := range c.pend {
		if p.id == id {
			last := len(c.pend) - 1
			c.pend[i] = c.pend[last]
			c.pend = c.pend[:last]
			if last == 0 && cap(c.pend) > 64 {
				c.pend = nil
			}
			return true
		}
	}
	return false
}

// takeAllPend empties the connection's pending acks and returns them.
func (c *conn) takeAllPend() []pendRef {
	c.pmu.Lock()
	p := c.pend
	c.pend = nil
	c.pmu.Unlock()
	return p
}

// firstIssued is when c's token chain began (zero when unknown).
func (c *conn) firstIssued() time.Time {
	if c.first == 0 {
		return time.Time{}
	}
	return time.Unix(c.first, 0)
}
