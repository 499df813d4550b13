package node

import (
	"errors"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/gobwas/ws"

	"github.com/tetherhq/tether/protocol"
)

// Handshake limits. gobwas/ws reads the request line and every header line
// whole, however long, so the node bounds what it may read before the
// upgrade: otherwise one client sending an endless header line takes the
// node's memory before it has even authenticated.
var (
	// errRequestLineTooLong: the request line exceeds max_handshake_line_bytes (414).
	errRequestLineTooLong = errors.New("node: handshake request line too long")
	// errHeaderTooLarge: a header line exceeds max_handshake_line_bytes, or
	// the whole request max_handshake_bytes (431).
	errHeaderTooLarge = errors.New("node: handshake headers too large")
)

// limitedHandshake is the reader the upgrade reads the request through. It
// passes bytes on until the blank line that ends the request head, and fails
// the read that would take a line or the head over its limit. Reads past
// the head (a client that sent frames without waiting for the 101) pass
// through unchecked.
type limitedHandshake struct {
	r        io.Reader
	maxLine  int
	maxTotal int
	total    int  // bytes of the head read so far
	line     int  // bytes of the current line, '\r' included
	cr       bool // the last byte of the current line is '\r'
	first    bool // the current line is the request line
	done     bool // the blank line was read
	err      error
}

func newLimitedHandshake(r io.Reader, maxLine, maxTotal int) *limitedHandshake {
	return &limitedHandshake{r: r, maxLine: maxLine, maxTotal: maxTotal, first: true}
}

func (h *limitedHandshake) Read(p []byte) (int, error) {
	if h.err != nil {
		return 0, h.err
	}
	if h.done {
		return h.r.Read(p)
	}
	// Never read more than the head may still hold (plus one byte, to see
	// that it is over): what is read is what the upgrade may buffer.
	if room := h.maxTotal - h.total + 1; len(p) > room {
		p = p[:room]
	}
	n, err := h.r.Read(p)
	for i := 0; i < n; i++ {
		h.total++
		if b := p[i]; b == '\n' {
			content := h.line
			if h.cr {
				content-- // a line's '\r' is not part of it
			}
			if content == 0 {
				h.done = true
				return n, err
			}
			if content > h.maxLine {
				return 0, h.lineTooLong()
			}
			h.line, h.cr, h.first = 0, false, false
		} else {
			h.line++
			h.cr = b == '\r'
			if h.line > h.maxLine+1 {
				return 0, h.lineTooLong()
			}
		}
		if h.total > h.maxTotal {
			h.err = errHeaderTooLarge
			return 0, h.err
		}
	}
	return n, err
}

func (h *limitedHandshake) lineTooLong() error {
	if h.first {
		h.err = errRequestLineTooLong
	} else {
		h.err = errHeaderTooLarge
	}
	return h.err
}

// httpError is a whole HTTP error response that closes the connection.
func httpError(status, header, body string) string {
	body += "\r\n"
	return "HTTP/1.1 " + status + "\r\n" + header + "Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

var (
	respURITooLong     = httpError("414 URI Too Long", "", "request line too long")
	respHeaderTooLarge = httpError("431 Request Header Fields Too Large", "", "request headers too large")
	respTooMany        = httpError("429 Too Many Requests", "Retry-After: 1\r\n", "too many connections from your address; retry later")
)

// handshake is what the upgrade learned from the request.
type handshake struct {
	token, service string
	badPath        bool
}

// upgrade reads the WebSocket handshake from rw (through the handshake
// limits) and answers it: 101 on success; 404 for another path; 414 or 431
// when the request is over the limits (then err is errRequestLineTooLong or
// errHeaderTooLarge); 400 or 426 for a request that is not a valid
// WebSocket upgrade.
func (n *Node) upgrade(rw io.ReadWriter) (handshake, error) {
	var hs handshake
	lr := newLimitedHandshake(rw, n.cfg.MaxHandshakeLineBytes, n.cfg.MaxHandshakeBytes)
	u := ws.Upgrader{
		Protocol: func(p []byte) bool { return string(p) == protocol.Subprotocol },
		OnRequest: func(uri []byte) error {
			pu, err := url.ParseRequestURI(string(uri))
			if err != nil || pu.Path != n.cfg.Path {
				hs.badPath = true
				return ws.RejectConnectionError(ws.RejectionStatus(404), ws.RejectionReason("no WebSocket endpoint here; use "+n.cfg.Path))
			}
			q := pu.Query()
			hs.token, hs.service = q.Get("token"), q.Get("service")
			return nil
		},
		OnHeader: func(key, value []byte) error {
			if strings.EqualFold(string(key), "Authorization") {
				if t, ok := strings.CutPrefix(string(value), "Bearer "); ok && hs.token == "" {
					hs.token = strings.TrimSpace(t)
				}
			}
			return nil
		},
	}
	_, err := u.Upgrade(struct {
		io.Reader
		io.Writer
	}{lr, rw})
	switch {
	case errors.Is(err, errRequestLineTooLong):
		_, _ = io.WriteString(rw, respURITooLong)
	case errors.Is(err, errHeaderTooLarge):
		_, _ = io.WriteString(rw, respHeaderTooLarge)
	}
	return hs, err
}
