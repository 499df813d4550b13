package node

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/gobwas/ws"

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
			// Out of file descriptors or similar: back off, as net/http does.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			n.log.Warn("accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-n.quit:
				return
			}
			continue
		}
		delay = 0
		if !n.spawn(func() { n.serve(nc) }) {
			_ = nc.Close()
			return
		}
	}
}

// serve upgrades one TCP connection and runs its reader.
func (n *Node) serve(nc net.Conn) {
	if n.draining.Load() {
		_ = nc.Close()
		return
	}
	c := &conn{n: n, nc: nc, accepted: time.Now().UnixNano(), fd: -1}
	if sc, ok := nc.(syscall.Conn); ok {
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

	var tok, svc string
	var badPath bool
	u := ws.Upgrader{
		Protocol: func(p []byte) bool { return string(p) == protocol.Subprotocol },
		OnRequest: func(uri []byte) error {
			pu, err := url.ParseRequestURI(string(uri))
			if err != nil || pu.Path != n.cfg.Path {
				badPath = true
				return ws.RejectConnectionError(ws.RejectionStatus(404), ws.RejectionReason("no WebSocket endpoint here; use "+n.cfg.Path))
			}
			q := pu.Query()
			tok, svc = q.Get("token"), q.Get("service")
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if strings.EqualFold(string(key), "Authorization") {
				if t, ok := strings.CutPrefix(string(value), "Bearer "); ok && tok == "" {
					tok = strings.TrimSpace(t)
				}
			}
			return nil
		},
	}
	_ = nc.SetDeadline(time.Now().Add(n.cfg.AuthTimeout))
	if _, err := u.Upgrade(nc); err != nil {
		if !badPath {
			n.log.Debug("upgrade failed", "remote", nc.RemoteAddr().String(), "err", err)
		}
		n.metrics.upgradeFailed.Add(1)
		c.terminate(protocol.CloseProtocolError, "upgrade_failed", false)
		return
	}
	_ = nc.SetDeadline(time.Time{})
	if tok != "" {
		n.authenticate(c, tok, svc)
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
