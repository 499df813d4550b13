package node

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/tetherhq/tether/protocol"
)

func (n *Node) acceptLoop() {
	var delay time.Duration
	for {
		nc, err := n.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: back off, as net/http
			// does, rather than spin on the error.
			n.metrics.acceptErrors.Add(1)
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			n.acceptLog.warn(n.log, "accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-n.quit:
				return
			}
			continue
		}
		delay = 0
		key, limited := n.limits.key(nc.RemoteAddr())
		if limited && !n.limits.admit(key, time.Now().UnixNano()) {
			n.metrics.connLimited.Add(1)
			n.refuse(nc)
			continue
		}
		if !n.spawn(func() { n.serve(nc, key, limited) }) {
			if limited {
				n.limits.release(key, true)
			}
			_ = nc.Close()
			return
		}
	}
}

// refuse answers a connection over its address's limits with 429 and
// closes it. A fresh socket takes the few bytes at once; the deadline only
// guards against a peer that never reads.
func (n *Node) refuse(nc net.Conn) {
	if n.tls == nil {
		_ = nc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		_, _ = io.WriteString(nc, respTooMany)
	}
	_ = nc.Close()
}

// serve upgrades one TCP connection and runs its reader. key and limited
// are its address's entry in the per-address limits.
func (n *Node) serve(nc net.Conn, key netip.Addr, limited bool) {
	c := &conn{n: n, nc: nc, accepted: time.Now().UnixNano(), fd: -1, addr: key, limited: limited}
	c.unauth.Store(limited)
	if n.draining.Load() {
		n.releaseAddr(c)
		_ = nc.Close()
		return
	}
	if n.tls != nil {
		// The TLS handshake runs inside the upgrade's first read, under
		// the same deadline. Reads and writes then go through crypto/tls:
		// such connections are read by a goroutine each (see reader.go).
		nc = tls.Server(nc, n.tls)
		c.nc = nc
	} else if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			_ = raw.Control(func(fd uintptr) { c.fd = int32(fd) })
		}
	}
	c.lastRead.Store(c.accepted)
	n.preMu.Lock()
	n.pre[c] = struct{}{}
	n.preMu.Unlock()
	n.metrics.accepted.Add(1)

	_ = nc.SetDeadline(time.Now().Add(n.cfg.AuthTimeout))
	hs, err := n.upgrade(nc)
	if err != nil {
		switch {
		case errors.Is(err, errRequestLineTooLong), errors.Is(err, errHeaderTooLarge):
			n.metrics.handshakeTooBig.Add(1)
			n.log.Debug("handshake over the limits", "remote", nc.RemoteAddr().String(), "err", err)
			lingerClose(nc)
		case !hs.badPath:
			n.log.Debug("upgrade failed", "remote", nc.RemoteAddr().String(), "err", err)
		}
		n.metrics.upgradeFailed.Add(1)
		c.terminate(protocol.CloseProtocolError, "upgrade_failed", false)
		return
	}
	_ = nc.SetDeadline(time.Time{})
	if tc, ok := nc.(*tls.Conn); ok {
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			c.certName = pc[0].Subject.CommonName
		}
	}
	if hs.token != "" {
		n.authenticate(c, hs.token, hs.service)
	}
	if c.state.Load() == stateClosed {
		return
	}
	if c.raw == nil {
		_ = goroutineReader{}.add(c)
		return
	}
	if err := n.rd.add(c); err != nil {
		n.log.Warn("reader add failed", "err", err)
		c.terminate(protocol.CloseInternal, "internal", false)
	}
}

// releaseAddr uncounts c from its address's limits; it runs once per
// connection, when it ends.
func (n *Node) releaseAddr(c *conn) {
	if c.limited {
		n.limits.release(c.addr, c.unauth.Swap(false))
	}
}

// addrAuthenticated counts c, just welcomed, as authenticated.
func (n *Node) addrAuthenticated(c *conn) {
	if c.limited && c.unauth.Swap(false) {
		n.limits.authenticated(c.addr)
	}
}

// lingerClose lets the client read the error the node just wrote: closing
// a socket with unread input sends a reset, which may destroy the answer
// before the client reads it. It half-closes, then discards what the
// client still sends, within bounds (what one connection may cost is
// bounded by the per-address limits).
func lingerClose(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = nc.SetReadDeadline(time.Now().Add(handshakeLingerFor))
	_, _ = io.CopyN(io.Discard, nc, handshakeLingerBytes)
}

// How long, and how much, lingerClose reads.
const (
	handshakeLingerFor   = 500 * time.Millisecond
	handshakeLingerBytes = 256 << 10
)
