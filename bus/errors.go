package bus

import "errors"

// Errors returned by subject checks.
var (
	ErrNotPush = errors.New("bus: not a push subject")
)
