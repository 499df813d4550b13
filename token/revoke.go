package token

import (
	"fmt"
	"sync"
	"time"
)

// Revocation denies tokens before they expire, in one of two ways:
//
//   - by device (Device set): every token of the device whose chain began
//     (Claims.FirstIssued) before NotBefore is refused, refreshed ones
//     included; tokens issued to it afterwards are not (token times are
//     whole seconds: a token issued in the second of NotBefore is refused
//     too);
//   - by token ID (TokenID set): the one token with that jti is refused.
//
// Until is when the entry stops mattering (the last expiry of the tokens it
// denies) and may be forgotten.
type Revocation struct {
	Service   string
	Device    string
	NotBefore time.Time
	TokenID   string
	Until     time.Time
}

// ByDevice reports whether r revokes a device (rather than a token ID).
func (r Revocation) ByDevice() bool { return r.Device != "" }

// Matches reports whether r denies a token of service and device, with ID
// id, whose chain began at first (zero: unknown, which a device revocation
// denies).
func (r Revocation) Matches(service, device, id string, first time.Time) bool {
	if r.Service != service {
		return false
	}
	if r.ByDevice() {
		// Tokens carry times in whole seconds: a token issued in the
		// second of NotBefore may have been issued before it, and is
		// refused too.
		return r.Device == device && (first.IsZero() || first.Before(ceilSecond(r.NotBefore)))
	}
	return r.TokenID != "" && r.TokenID == id
}

// Revocations is the set of revocations a process checks tokens against.
// It is safe for concurrent use.
type Revocations struct {
	mu      sync.RWMutex
	devices map[[2]string]Revocation // (service, device)
	ids     map[[2]string]Revocation // (service, token ID)
}

// NewRevocations returns an empty set.
func NewRevocations() *Revocations {
	return &Revocations{devices: map[[2]string]Revocation{}, ids: map[[2]string]Revocation{}}
}

// Add adds r to the set. Of two revocations of one device the later
// NotBefore wins. It reports whether the set changed.
func (s *Revocations) Add(r Revocation) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.ByDevice() {
		k := [2]string{r.Service, r.Device}
		if old, ok := s.devices[k]; ok && !old.NotBefore.Before(r.NotBefore) {
			if r.Until.After(old.Until) {
				old.Until = r.Until
				s.devices[k] = old
			}
			return false
		}
		s.devices[k] = r
		return true
	}
	k := [2]string{r.Service, r.TokenID}
	old, ok := s.ids[k]
	if ok && !r.Until.After(old.Until) {
		return false
	}
	s.ids[k] = r
	return !ok
}

// Forget drops the revocations whose Until has passed at now.
func (s *Revocations) Forget(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, r := range s.devices {
		if !r.Until.IsZero() && r.Until.Before(now) {
			delete(s.devices, k)
		}
	}
	for k, r := range s.ids {
		if !r.Until.IsZero() && r.Until.Before(now) {
			delete(s.ids, k)
		}
	}
}

// Len returns the number of revocations held.
func (s *Revocations) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.devices) + len(s.ids)
}

// Check returns an error wrapping ErrRevoked when c is revoked.
func (s *Revocations) Check(c *Claims) error {
	return s.CheckIdentity(c.Service, c.Subject, c.ID, c.FirstIssued())
}

// CheckIdentity is Check for a token known by its parts.
func (s *Revocations) CheckIdentity(service, device, id string, first time.Time) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.devices) == 0 && len(s.ids) == 0 {
		return nil
	}
	if r, ok := s.devices[[2]string{service, device}]; ok && r.Matches(service, device, id, first) {
		return fmt.Errorf("%w: device %s of service %s, tokens issued before %s", ErrRevoked, device, service, r.NotBefore.UTC().Format(time.RFC3339))
	}
	if id != "" {
		if _, ok := s.ids[[2]string{service, id}]; ok {
			return fmt.Errorf("%w: token %s of service %s", ErrRevoked, id, service)
		}
	}
	return nil
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if tr := t.Truncate(time.Second); !tr.Equal(t) {
		return tr.Add(time.Second)
	}
	return t
}
