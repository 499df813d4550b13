package directory

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Errors.
var (
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("directory: already started")
	// ErrNoStore is returned by New without Deps.Store.
	ErrNoStore = errors.New("directory: Deps.Store is required")
)

// Error codes: the "error" member of every JSON error body. They are part of
// the public contract (docs/directory.md).
const (
	CodeBadRequest       = "bad_request"             // 400: malformed query or body
	CodeInvalidName      = "invalid_name"            // 400: a name fails protocol.ValidName
	CodeUnknownService   = "unknown_service"         // 404
	CodeUnknownClient    = "unknown_client"          // 404
	CodeUnknownTier      = "unknown_tier"            // 404
	CodeNotFound         = "not_found"               // 404: no such path or admin resource
	CodeClientMismatch   = "client_service_mismatch" // 409: ?service=S&client=C with C mapped to another service
	CodeConflict         = "conflict"                // 409: admin change lost a race or already exists
	CodeMethod           = "method_not_allowed"      // 405
	CodeUnauthorized     = "unauthorized"            // 401: no or unusable credentials
	CodeForbidden        = "forbidden"               // 403: wrong credentials
	CodeTokenExpired     = "token_expired"           // 401: refresh with an expired device token
	CodeNoLiveNodes      = "no_live_nodes"           // 503
	CodeStoreUnavailable = "store_unavailable"       // 503
	CodeNotReady         = "not_ready"               // 503: no map loaded yet
	CodeAdminDisabled    = "admin_disabled"          // 404: no admin_token configured
	CodeNegotiateOff     = "negotiate_disabled"      // 404: no keyring, or no secret for the service
	CodeInternal         = "internal"                // 500
	CodeRateLimited      = "rate_limited"            // 429: too many requests, or locked out after failed authentications
	CodeRefreshLimit     = "refresh_limit"           // 401: the token's chain is older than max_token_lifetime
	CodeRevoked          = "revoked"                 // 401: refresh with a revoked token
)

// apiError is the JSON body of every error answer.
type apiError struct {
	Code    string `json:"error"`
	Message string `json:"message"`
	Service string `json:"service,omitempty"`
	Tier    string `json:"tier,omitempty"`
	Client  string `json:"client,omitempty"`
	// Assigned counts the nodes assigned to the tier (no_live_nodes only).
	Assigned *int `json:"assigned,omitempty"`
}

var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
	hdrNoSniff = []string{"nosniff"}
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // messages quote <placeholders>; nothing here is HTML
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"internal","message":"encode answer"}` + "\n")
	}
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["X-Content-Type-Options"] = hdrNoSniff
	h["Content-Length"] = []string{strconv.Itoa(buf.Len())}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, e apiError) {
	if w.Header().Get("Cache-Control") == "" {
		w.Header()["Cache-Control"] = hdrNoStore
	}
	writeJSON(w, status, e)
}

func errorf(w http.ResponseWriter, status int, code, msg string) {
	writeError(w, status, apiError{Code: code, Message: msg})
}
