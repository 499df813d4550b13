package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/protocol"
)

// Revocation is the message announcing a revocation on
// tether.revocations: every node closes the live connections it denies
// (4006 revoked) and refuses their tokens from then on, and every directory
// refuses to refresh them. It is published by the directory that recorded
// it in the store (the store is what a process that missed the message
// reads at start and every node.revocation_refresh).
//
//	{"service":"vacuum","device":"vac-001","not_before":"2026-11-26T07:00:00Z","until":"2026-12-26T07:00:00Z"}
//	{"service":"vacuum","token_id":"4kq0vW2mX1cRrjzKx1b8zQ","until":"2026-11-27T07:00:00Z"}
type Revocation struct {
	// Service the revoked device or token belongs to.
	Service string `json:"service"`
	// Device, for a device revocation: tokens of the device whose chain
	// began before NotBefore are denied.
	Device    string    `json:"device,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	// TokenID, for a token revocation: the jti of the one token denied.
	TokenID string `json:"token_id,omitempty"`
	// Until is when the revocation stops mattering (the denied tokens have
	// all expired) and may be forgotten.
	Until time.Time `json:"until,omitzero"`
}

// Validate checks that r revokes exactly one device or one token ID of a
// service, with valid names.
func (r Revocation) Validate() error {
	if err := protocol.ValidName(r.Service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	switch {
	case r.Device != "" && r.TokenID != "":
		return errors.New("give device or token_id, not both")
	case r.Device != "":
		if err := protocol.ValidName(r.Device); err != nil {
			return fmt.Errorf("device: %w", err)
		}
		if r.NotBefore.IsZero() {
			return errors.New("a device revocation needs not_before")
		}
	case r.TokenID != "":
		if err := protocol.ValidName(r.TokenID); err != nil {
			return fmt.Errorf("token_id: %w", err)
		}
	default:
		return errors.New("give device or token_id")
	}
	if r.Until.IsZero() {
		return errors.New("until is required")
	}
	return nil
}

// PublishRevocation publishes r on the revocations subject.
func PublishRevocation(nc *nats.Conn, s Subjects, r Revocation) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("bus: revocation: %w", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("bus: revocation: %w", err)
	}
	if err := nc.Publish(s.Revocations(), b); err != nil {
		return fmt.Errorf("bus: publish revocation: %w", err)
	}
	return nil
}

// ParseRevocation decodes and validates a Revocation message.
func ParseRevocation(b []byte) (Revocation, error) {
	var r Revocation
	if err := json.Unmarshal(b, &r); err != nil {
		return Revocation{}, fmt.Errorf("%w: revocation: %w", ErrBadMessage, err)
	}
	if err := r.Validate(); err != nil {
		return Revocation{}, fmt.Errorf("%w: revocation: %w", ErrBadMessage, err)
	}
	return r, nil
}
