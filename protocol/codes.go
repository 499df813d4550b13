package protocol

import "strconv"

// CloseCode is a WebSocket close status code. tether's own codes are in the
// 4000-4999 range the RFC leaves to applications:
//
//	4000-4099  terminal: do not reconnect until the cause is fixed (get a new
//	           token, fix the client); reconnecting at once will fail again
//	4100-4199  transient: reconnect, with backoff, to the next node of the
//	           list (or a fresh list from the directory)
//
// The standard codes 1000 (normal), 1002 (protocol error), 1007 (bad UTF-8),
// 1008 (policy) and 1009 (message too big) are used as the RFC defines them.
type CloseCode uint16

// Close codes sent by the node.
const (
	CloseNormal        CloseCode = 1000
	CloseProtocolError CloseCode = 1002
	CloseInvalidData   CloseCode = 1007
	CloseTooBig        CloseCode = 1009

	// CloseBadToken: the token is malformed, its signature does not verify,
	// or it lacks a required claim. Get a new token.
	CloseBadToken CloseCode = 4001
	// CloseTokenExpired: the token's exp has passed. Get a new token.
	CloseTokenExpired CloseCode = 4002
	// CloseForbidden: the token is valid but not for what was asked (another
	// service than the one requested, or a service this node does not know).
	CloseForbidden CloseCode = 4003
	// CloseBadFrame: the first frame was not a valid auth frame.
	CloseBadFrame CloseCode = 4004
	// CloseReplaced: a newer connection of the same device took over.
	// Do not reconnect: the device is connected elsewhere.
	CloseReplaced CloseCode = 4005
	// CloseRevoked: the token, or every token the device held, was
	// revoked. Do not reconnect with it: the device needs a token issued
	// after the revocation.
	CloseRevoked CloseCode = 4006

	// CloseShutdown: the node is shutting down or draining; reconnect to
	// another node of the list after the announced delay.
	CloseShutdown CloseCode = 4100
	// CloseSlowConsumer: the device did not read its pushes fast enough and
	// its outbound queue overflowed.
	CloseSlowConsumer CloseCode = 4101
	// CloseAuthTimeout: no auth arrived within the auth deadline.
	CloseAuthTimeout CloseCode = 4102
	// ClosePingTimeout: nothing was heard from the device within the dead-peer
	// timeout. The device rarely sees it: its socket is usually gone.
	ClosePingTimeout CloseCode = 4103
	// CloseInternal: the node failed (for example, lost NATS for too long).
	CloseInternal CloseCode = 4104
)

// Transient reports whether a client should reconnect after this close code.
// Like the 4000-4099 codes, 1002, 1007 and 1009 call for fixing the client
// first (docs/protocol.md, "Close codes").
func (c CloseCode) Transient() bool {
	switch {
	case c >= 4000 && c < 4100:
		return false
	case c >= 4100 && c < 4200:
		return true
	}
	return c != CloseProtocolError && c != CloseInvalidData && c != CloseTooBig
}

// String is the code's reason name, as used in events and metrics.
func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseProtocolError:
		return "protocol_error"
	case CloseInvalidData:
		return "invalid_data"
	case CloseTooBig:
		return "too_big"
	case CloseBadToken:
		return "bad_token"
	case CloseTokenExpired:
		return "token_expired"
	case CloseForbidden:
		return "forbidden"
	case CloseBadFrame:
		return "bad_frame"
	case CloseReplaced:
		return "replaced"
	case CloseRevoked:
		return "revoked"
	case CloseShutdown:
		return "shutdown"
	case CloseSlowConsumer:
		return "slow_consumer"
	case CloseAuthTimeout:
		return "auth_timeout"
	case ClosePingTimeout:
		return "ping_timeout"
	case CloseInternal:
		return "internal"
	}
	return "code_" + strconv.Itoa(int(c))
}

// Error codes carried in error frames. An error frame that closes the
// connection is followed by the close code of the same name; the others
// leave the connection open.
const (
	ErrBadToken     = "bad_token"
	ErrTokenExpired = "token_expired"
	ErrForbidden    = "forbidden"
	ErrBadFrame     = "bad_frame"
	ErrAuthTimeout  = "auth_timeout"
	ErrTooBig       = "too_big"
	ErrRevoked      = "revoked"
	// ErrUnknownType: a frame type the node does not know; the connection stays open.
	ErrUnknownType = "unknown_type"
	// ErrUnknownAck: an ack for a push that is not pending (already acked,
	// timed out, or never sent); the connection stays open.
	ErrUnknownAck = "unknown_ack"
	// ErrAlreadyAuthed: a second auth frame; the connection stays open.
	ErrAlreadyAuthed = "already_authenticated"
	// ErrUnavailable: an upstream message could not be handed to NATS; the
	// connection stays open and the device may retry.
	ErrUnavailable = "unavailable"
	// ErrRateLimited: the device sent upstream messages faster than allowed;
	// the message was dropped.
	ErrRateLimited = "rate_limited"
)
