package appsdk

import "errors"

// Errors returned by the SDK. They are wrapped with %w and extra detail;
// test for them with errors.Is. Outcomes of a push that reached NATS
// (offline, timeout, rejected...) are not errors: they are the Status of the
// Receipt.
var (
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("appsdk: client closed")
	// ErrConnClosed: the NATS connection is closed (by its owner, or for
	// good after failed reconnects).
	ErrConnClosed = errors.New("appsdk: NATS connection closed")
	// ErrBadName: a service, device, group, tier or queue name is not a valid
	// subject token (see protocol.ValidName).
	ErrBadName = errors.New("appsdk: invalid name")
	// ErrBadConnID: a connection ID is not of the form <node>.<local>.
	ErrBadConnID = errors.New("appsdk: invalid connection ID")
	// ErrBadOption: an option was given an invalid value.
	ErrBadOption = errors.New("appsdk: invalid option")
	// ErrNilHandler: a Handle method was given a nil handler.
	ErrNilHandler = errors.New("appsdk: nil handler")
	// ErrNoKeys: IssueToken was called on a Client built without WithKeys.
	ErrNoKeys = errors.New("appsdk: no keys to issue tokens (use WithKeys)")
	// ErrPayloadTooLarge: the payload is larger than the NATS server's
	// max_payload, so it could not be published at all. (A payload NATS
	// accepts but a node refuses is a Receipt with StatusRejected.)
	ErrPayloadTooLarge = errors.New("appsdk: payload larger than NATS max_payload")
	// ErrPublish: NATS refused to publish the push for another reason.
	ErrPublish = errors.New("appsdk: publish failed")
)
