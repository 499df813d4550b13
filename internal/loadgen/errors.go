package loadgen

import "errors"

// ErrUnsupported is returned on platforms without /proc, process groups or
// RLIMIT_NOFILE.
var ErrUnsupported = errors.New("loadgen: needs Linux (/proc, process groups, RLIMIT_NOFILE)")
