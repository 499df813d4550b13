package directory

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/token"
)

// NegotiateRequest is the body of POST /v1/negotiate when it is
// authenticated with a service's registration secret.
type NegotiateRequest struct {
	Service string `json:"service"`
	Device  string `json:"device"`
	// Groups the device's connection joins; optional.
	Groups []string `json:"groups,omitempty"`
}

// NegotiateAnswer is the answer of POST /v1/negotiate: a device token and
// the node list in one (16th and 17th embodiments).
type NegotiateAnswer struct {
	Token        string    `json:"token"`
	ExpiresAt    time.Time `json:"expires_at"`
	Service      string    `json:"service"`
	Tier         string    `json:"tier"`
	Device       string    `json:"device"`
	Groups       []string  `json:"groups,omitempty"`
	HandshakeURL []string  `json:"handshakeUrl"`
}

// maxNegotiateBody bounds the negotiate request body.
const maxNegotiateBody = 16 << 10

var hdrBearerRealm = []string{`Bearer realm="tether"`}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

func unauthorized(w http.ResponseWriter, code, msg string) {
	w.Header()["Www-Authenticate"] = hdrBearerRealm
	errorf(w, http.StatusUnauthorized, code, msg)
}

// handleNegotiate answers POST /v1/negotiate. Two forms:
//
//   - Authorization: Bearer <registration secret of S>, body
//     {"service":"S","device":"D","groups":[...]}: issues a token for D;
//     the tier comes from the client map when D is mapped, else S's
//     default tier. For app servers that front the directory (17th
//     embodiment), or devices that hold the secret (16th).
//   - Authorization: Bearer <device token>, no body: issues a fresh token
//     with the same service, device, tier and groups, for the services in
//     RefreshServices, never past MaxTokenLifetime from the first token of
//     its chain, and never for a revoked one.
//
// An address that fails to authenticate too often is locked out, and
// negotiate is rate-limited per address (Config.AuthFailures,
// NegotiateRate).
func (s *Server) handleNegotiate(w http.ResponseWriter, r *http.Request) {
	w.Header()["Cache-Control"] = hdrNoStore
	if s.keys == nil {
		errorf(w, http.StatusNotFound, CodeNegotiateOff, "negotiate is not enabled on this directory (no keyring)")
		return
	}
	now := time.Now()
	ip, ok := s.lim.guard(w, r, now)
	if !ok {
		return
	}
	if !s.lim.negotiate(ip, now) {
		s.lim.tooMany(w, time.Second, "too many negotiate requests from your address; retry later")
		return
	}
	cred, ok := bearer(r)
	if !ok {
		unauthorized(w, CodeUnauthorized, "send Authorization: Bearer <registration secret> with a JSON body, or Bearer <device token> without one")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxNegotiateBody))
	if err != nil {
		errorf(w, http.StatusBadRequest, CodeBadRequest, "read body: "+err.Error())
		return
	}
	sn := s.snap.Load()
	if sn == nil {
		s.notReady(w, formNegotiate)
		return
	}
	var service, device, tier string
	var groups []string
	var chain token.IssueOptions // a refresh continues its token's chain
	if len(bytes.TrimSpace(body)) == 0 {
		// Refresh with a device token.
		c, err := s.keys.Verify(cred)
		if err != nil {
			if errors.Is(err, token.ErrExpired) {
				unauthorized(w, CodeTokenExpired, "the device token has expired; negotiate again with the registration secret")
			} else {
				s.lim.failed(ip, now)
				unauthorized(w, CodeUnauthorized, "the bearer token is not a valid device token (and no body was sent for a registration)")
			}
			return
		}
		service, device, tier, groups = c.Service, c.Device(), c.Tier, c.Groups
		if !s.refresh[service] {
			writeError(w, http.StatusForbidden, apiError{Code: CodeForbidden, Service: service,
				Message: "token refresh is not enabled for service " + service + " (services." + service + ".token_refresh)"})
			return
		}
		if err := s.revoked.Check(c); err != nil {
			s.metrics.refused.Add(1)
			unauthorized(w, CodeRevoked, "the device token is revoked; the device needs a new registration")
			return
		}
		first := c.FirstIssued()
		limit := first.Add(s.cfg.MaxTokenLifetime)
		if first.IsZero() || !now.Before(limit) {
			s.metrics.refused.Add(1)
			unauthorized(w, CodeRefreshLimit, "the device token's chain began more than max_token_lifetime ("+s.cfg.MaxTokenLifetime.String()+") ago, or it has no iat; negotiate again with the registration secret")
			return
		}
		chain = token.IssueOptions{FirstIssued: first, NotAfter: limit}
		if sn.services[service] == nil {
			writeError(w, http.StatusNotFound, apiError{Code: CodeUnknownService, Service: service, Message: "service " + service + " is not in the map"})
			return
		}
	} else {
		var req NegotiateRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			errorf(w, http.StatusBadRequest, CodeBadRequest, "body: "+err.Error())
			return
		}
		if dec.More() {
			errorf(w, http.StatusBadRequest, CodeBadRequest, "body: more than one JSON value")
			return
		}
		for _, f := range []struct{ key, v string }{{"service", req.Service}, {"device", req.Device}} {
			if err := protocol.ValidName(f.v); err != nil {
				errorf(w, http.StatusBadRequest, CodeInvalidName, f.key+": "+err.Error())
				return
			}
		}
		if max := s.keys.Limits().MaxGroups; len(req.Groups) > max {
			errorf(w, http.StatusBadRequest, CodeBadRequest, "groups: "+strconv.Itoa(len(req.Groups))+", at most "+strconv.Itoa(max)+" (tokens.max_groups)")
			return
		}
		for _, g := range req.Groups {
			if err := protocol.ValidName(g); err != nil {
				errorf(w, http.StatusBadRequest, CodeInvalidName, "groups: "+err.Error())
				return
			}
		}
		service, device, groups = req.Service, req.Device, req.Groups
		want, hasSecret := s.secrets[service]
		if hasSecret {
			got := sha256.Sum256([]byte(cred))
			ok := subtle.ConstantTimeCompare(got[:], want[:]) == 1
			if prev, has := s.prevSecrets[service]; has && subtle.ConstantTimeCompare(got[:], prev[:]) == 1 {
				ok = true // the secret being rotated out
			}
			if !ok {
				s.lim.failed(ip, now)
				unauthorized(w, CodeUnauthorized, "wrong registration secret for service "+service)
				return
			}
		}
		if sn.services[service] == nil {
			writeError(w, http.StatusNotFound, apiError{Code: CodeUnknownService, Service: service, Message: "service " + service + " is not in the map"})
			return
		}
		if !hasSecret {
			writeError(w, http.StatusForbidden, apiError{Code: CodeForbidden, Service: service,
				Message: "negotiate with a registration secret is not enabled for service " + service})
			return
		}
		c, found, _, err := s.resolveClient(r.Context(), device)
		switch {
		case err != nil:
			w.Header()["Retry-After"] = s.retryWait
			writeError(w, http.StatusServiceUnavailable, apiError{Code: CodeStoreUnavailable, Client: device,
				Message: "the store is unavailable and device " + device + " is not in the directory's cache; retry later"})
			return
		case found && c.Service != service:
			writeError(w, http.StatusConflict, apiError{Code: CodeClientMismatch, Service: service, Client: device,
				Message: "device " + device + " belongs to service " + c.Service + ", not " + service})
			return
		case found:
			tier = c.Tier
		}
	}
	sv := sn.services[service]
	if tier == "" {
		tier = sv.defaultTier
	}
	g := sv.tiers[tier]
	if g == nil {
		writeError(w, http.StatusNotFound, apiError{Code: CodeUnknownTier, Service: service, Tier: tier, Message: "service " + service + " has no tier " + tier})
		return
	}
	hl := s.health.Load()
	ms := g.live(s.asOf(sn, hl))
	s.lookupHeaders(w.Header(), hl, false)
	w.Header()["Cache-Control"] = hdrNoStore
	if len(ms) == 0 {
		s.noLiveNodes(w, g, formNegotiate)
		return
	}
	chain.Tier, chain.Groups, chain.TTL = tier, groups, s.cfg.TokenTTL
	raw, err := s.keys.Issue(service, device, chain)
	if errors.Is(err, token.ErrTooLarge) {
		errorf(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if err != nil {
		s.log.Error("negotiate: issue token", "service", service, "err", err)
		errorf(w, http.StatusInternalServerError, CodeInternal, "cannot issue a token for service "+service)
		return
	}
	claims, err := s.keys.Verify(raw)
	if err != nil {
		s.log.Error("negotiate: issued token does not verify", "service", service, "err", err)
		errorf(w, http.StatusInternalServerError, CodeInternal, "issued token does not verify")
		return
	}
	a := NegotiateAnswer{
		Token: raw, ExpiresAt: claims.ExpiresAt.UTC(), Service: service, Tier: tier, Device: device, Groups: groups,
		HandshakeURL: make([]string, 0, len(ms)),
	}
	for _, i := range spreadOrder(ms, s.cfg.Spread, nil) {
		a.HandshakeURL = append(a.HandshakeURL, ms[i].url)
	}
	s.metrics.negotiated.Add(1)
	writeJSON(w, http.StatusOK, a)
}
