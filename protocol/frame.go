package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Subprotocol is the WebSocket subprotocol name of this protocol version.
// Clients may offer it in Sec-WebSocket-Protocol; a client that offers no
// subprotocol is served the same protocol.
const Subprotocol = "tether.v1"

// Frame types.
const (
	TypeAuth      = "auth"
	TypeWelcome   = "welcome"
	TypePush      = "push"
	TypeAck       = "ack"
	TypeMsg       = "msg"
	TypeReconnect = "reconnect"
	TypeError     = "error"
	TypePing      = "ping"
	TypePong      = "pong"
)

// EncBase64 is the "enc" value of a frame whose data is a base64 string of
// bytes that were not JSON.
const EncBase64 = "base64"

// Frame is any frame of the protocol, decoded. Fields a frame type does not
// use are empty. It is what both sides decode into; encoding goes through
// the Append functions, which do not allocate.
type Frame struct {
	Type string `json:"type"`
	// auth
	Token   string `json:"token,omitempty"`
	Service string `json:"service,omitempty"`
	// welcome
	Conn     string   `json:"conn,omitempty"`
	Device   string   `json:"device,omitempty"`
	Node     string   `json:"node,omitempty"`
	Tier     string   `json:"tier,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	PingMS   int64    `json:"ping_ms,omitempty"`
	MaxFrame int      `json:"max_frame,omitempty"`
	// push, ack, msg, error, ping, pong
	ID     string          `json:"id,omitempty"`
	MsgID  string          `json:"msg_id,omitempty"`
	NoAck  bool            `json:"no_ack,omitempty"`
	Result string          `json:"result,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	Enc    string          `json:"enc,omitempty"`
	// reconnect
	Reason  string `json:"reason,omitempty"`
	AfterMS int64  `json:"after_ms,omitempty"`
	// error
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// ErrMalformed wraps every decoding error.
var ErrMalformed = errors.New("protocol: malformed frame")

// Decode parses one frame. It fails on anything but a JSON object with a
// string "type". Data points into b; the strings are copies.
func Decode(b []byte, f *Frame) error {
	*f = Frame{}
	if decodeFast(b, f) && f.Type != "" {
		return nil
	}
	// The fallback decodes into its own variable, so that the caller's
	// Frame does not escape to the heap on the fast path.
	g := new(Frame)
	err := json.Unmarshal(b, g)
	*f = *g
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if f.Type == "" {
		return fmt.Errorf("%w: no \"type\"", ErrMalformed)
	}
	return nil
}

// Payload returns the bytes a push or msg frame carries: Data itself when it
// is JSON, or the decoded bytes when Enc is "base64". "data":null is the
// empty payload (see appendData), so it returns nil.
func (f *Frame) Payload() ([]byte, error) {
	if len(f.Data) == 0 {
		return nil, nil
	}
	if f.Enc == "" {
		if string(f.Data) == "null" {
			return nil, nil
		}
		return f.Data, nil
	}
	if f.Enc != EncBase64 {
		return nil, fmt.Errorf("%w: unknown enc %q", ErrMalformed, f.Enc)
	}
	var s string
	if err := json.Unmarshal(f.Data, &s); err != nil {
		return nil, fmt.Errorf("%w: base64 data is not a string: %w", ErrMalformed, err)
	}
	out, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return out, nil
}

// AppendPush appends a push frame. data is embedded as is when it is valid
// JSON in valid UTF-8, or else as a base64 string with "enc":"base64". An
// empty data is sent as null.
func AppendPush(dst []byte, id uint64, msgID string, data []byte, noAck bool) []byte {
	dst = append(dst, `{"type":"push","id":"`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '"')
	if msgID != "" {
		dst = append(dst, `,"msg_id":`...)
		dst = AppendString(dst, msgID)
	}
	if noAck {
		dst = append(dst, `,"no_ack":true`...)
	}
	dst = appendData(dst, data)
	return append(dst, '}')
}

// ScanPush reads a push frame written by AppendPush without a msg_id (how
// a node writes most pushes) without decoding its JSON: it returns the
// delivery ID and whether the frame says no_ack. ok is false for any other
// frame, which Decode then reads. Load generators use it to answer pushes
// cheaply.
func ScanPush(b []byte) (id uint64, noAck, ok bool) {
	rest, found := bytes.CutPrefix(b, []byte(`{"type":"push","id":"`))
	if !found {
		return 0, false, false
	}
	end := bytes.IndexByte(rest, '"')
	if end <= 0 || end > 19 || (rest[0] == '0' && end > 1) {
		return 0, false, false // empty, possibly over uint64, or not canonical
	}
	for _, c := range rest[:end] {
		if c < '0' || c > '9' {
			return 0, false, false
		}
		id = id*10 + uint64(c-'0')
	}
	rest = rest[end+1:]
	if noAck = bytes.HasPrefix(rest, []byte(`,"no_ack":true`)); noAck {
		return id, true, true
	}
	if !bytes.HasPrefix(rest, []byte(`,"data":`)) && !bytes.HasPrefix(rest, []byte(`,"enc":`)) {
		return 0, false, false // a msg_id, or another layout
	}
	return id, false, true
}

// AppendAckID appends the ack of push id with result, without data: what
// AppendAck writes for strconv.FormatUint(id, 10), without allocating.
func AppendAckID(dst []byte, id uint64, result string) []byte {
	dst = append(dst, `{"type":"ack","id":"`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '"')
	if result != "" {
		dst = append(dst, `,"result":`...)
		dst = AppendString(dst, result)
	}
	return append(dst, '}')
}

// AppendMsg appends an upstream msg frame (used by device clients).
func AppendMsg(dst []byte, id string, data []byte) []byte {
	dst = append(dst, `{"type":"msg"`...)
	if id != "" {
		dst = append(dst, `,"id":`...)
		dst = AppendString(dst, id)
	}
	dst = appendData(dst, data)
	return append(dst, '}')
}

func appendData(dst, data []byte) []byte {
	switch {
	case len(data) == 0:
		return append(dst, `,"data":null`...)
	case json.Valid(data) && utf8.Valid(data):
		// json.Valid accepts invalid UTF-8 inside strings, but frames go
		// out as WebSocket text frames, which must be UTF-8 (the node
		// closes a device's invalid one with 1007): send such data base64.
		dst = append(dst, `,"data":`...)
		return append(dst, bytes.TrimSpace(data)...)
	default:
		dst = append(dst, `,"enc":"base64","data":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, data)
		return append(dst, '"')
	}
}

// AppendAck appends an ack frame (used by device clients, and by the node to
// confirm an upstream msg that carried an id).
func AppendAck(dst []byte, id, result string, data []byte) []byte {
	dst = append(dst, `{"type":"ack","id":`...)
	dst = AppendString(dst, id)
	if result != "" {
		dst = append(dst, `,"result":`...)
		dst = AppendString(dst, result)
	}
	if len(data) > 0 {
		dst = appendData(dst, data)
	}
	return append(dst, '}')
}

// Welcome is the content of a welcome frame.
type Welcome struct {
	Conn, Service, Device, Node, Tier string
	Groups                            []string
	PingMS                            int64
	MaxFrame                          int
}

// AppendWelcome appends a welcome frame.
func AppendWelcome(dst []byte, w Welcome) []byte {
	dst = append(dst, `{"type":"welcome","conn":`...)
	dst = AppendString(dst, w.Conn)
	dst = append(dst, `,"service":`...)
	dst = AppendString(dst, w.Service)
	dst = append(dst, `,"device":`...)
	dst = AppendString(dst, w.Device)
	dst = append(dst, `,"node":`...)
	dst = AppendString(dst, w.Node)
	if w.Tier != "" {
		dst = append(dst, `,"tier":`...)
		dst = AppendString(dst, w.Tier)
	}
	if len(w.Groups) > 0 {
		dst = append(dst, `,"groups":[`...)
		for i, g := range w.Groups {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, g)
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"ping_ms":`...)
	dst = strconv.AppendInt(dst, w.PingMS, 10)
	dst = append(dst, `,"max_frame":`...)
	dst = strconv.AppendInt(dst, int64(w.MaxFrame), 10)
	return append(dst, '}')
}

// AppendError appends an error frame; id, when set, names the frame the
// error is about.
func AppendError(dst []byte, code, message, id string) []byte {
	dst = append(dst, `{"type":"error","code":`...)
	dst = AppendString(dst, code)
	if message != "" {
		dst = append(dst, `,"message":`...)
		dst = AppendString(dst, message)
	}
	if id != "" {
		dst = append(dst, `,"id":`...)
		dst = AppendString(dst, id)
	}
	return append(dst, '}')
}

// AppendReconnect appends a reconnect frame.
func AppendReconnect(dst []byte, reason string, afterMS int64) []byte {
	dst = append(dst, `{"type":"reconnect","reason":`...)
	dst = AppendString(dst, reason)
	dst = append(dst, `,"after_ms":`...)
	dst = strconv.AppendInt(dst, afterMS, 10)
	return append(dst, '}')
}

// AppendPong appends a pong frame answering an application-level ping.
func AppendPong(dst []byte, id string) []byte {
	dst = append(dst, `{"type":"pong"`...)
	if id != "" {
		dst = append(dst, `,"id":`...)
		dst = AppendString(dst, id)
	}
	return append(dst, '}')
}

// AppendAuth appends an auth frame (used by device clients).
func AppendAuth(dst []byte, token, service string) []byte {
	dst = append(dst, `{"type":"auth","token":`...)
	dst = AppendString(dst, token)
	if service != "" {
		dst = append(dst, `,"service":`...)
		dst = AppendString(dst, service)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 is replaced by
// U+FFFD, as encoding/json does.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
