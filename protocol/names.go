package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by the name checks.
var (
	ErrEmptyName   = errors.New("protocol: empty name")
	ErrNameTooLong = errors.New("protocol: name too long")
	ErrBadName     = errors.New("protocol: name has a character outside [A-Za-z0-9_:@-]")
	ErrBadConnID   = errors.New("protocol: malformed connection ID")
)

// MaxNameLen is the longest service, device, group, tier or node name accepted.
const MaxNameLen = 128

// ValidName reports whether s may be used as a service, device, group, tier
// or node name. Names become single NATS subject tokens, so they are limited
// to ASCII letters, digits and the characters '-', '_', ':' and '@', and to
// MaxNameLen bytes.
func ValidName(s string) error {
	if s == "" {
		return ErrEmptyName
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrNameTooLong, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return fmt.Errorf("%w: %q at byte %d of %q", ErrBadName, s[i], i, s)
		}
	}
	return nil
}

func nameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '-' || c == '_' || c == ':' || c == '@':
		return true
	}
	return false
}

// ValidConnID reports whether id has the form of a connection ID:
// "<node>.<local>", where node is a valid name and local is a non-empty run of
// ASCII letters and digits. Connection IDs are opaque to apps; the form is
// checked only so that an ID can never widen a subject.
func ValidConnID(id string) error {
	node, local, ok := strings.Cut(id, ".")
	if !ok || local == "" {
		return fmt.Errorf("%w: %q is not <node>.<local>", ErrBadConnID, id)
	}
	if err := ValidName(node); err != nil {
		return fmt.Errorf("%w: node part: %w", ErrBadConnID, err)
	}
	if len(local) > MaxNameLen {
		return fmt.Errorf("%w: local part too long", ErrBadConnID)
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("%w: %q in local part of %q", ErrBadConnID, c, id)
		}
	}
	return nil
}

// ConnNode returns the node part of a connection ID.
func ConnNode(id string) string {
	node, _, _ := strings.Cut(id, ".")
	return node
}
