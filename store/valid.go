package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"net/url"
	"slices"
	"time"

	"github.com/tetherhq/tether/protocol"
)

// DefaultTier is the default tier of a service created without one.
const DefaultTier = "free"

// maxClass bounds Node.Class, a free-form label.
const maxClass = 64

// canceled returns the context's error, if any, wrapped for op. Both
// implementations check it first so that a cancelled call never has effects.
func canceled(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

func invalid(op, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", op, ErrInvalid, fmt.Sprintf(format, args...))
}

func notFound(op, what, id string) error {
	return fmt.Errorf("%s: %w: %s %q", op, ErrNotFound, what, id)
}

func conflict(op string, want, have int64) error {
	return fmt.Errorf("%s: %w: map version is %d, not %d", op, ErrConflict, have, want)
}

// checkName checks a service, tier, node or client name.
func checkName(op, what, s string) error {
	if err := protocol.ValidName(s); err != nil {
		return fmt.Errorf("%s: %w: %s: %w", op, ErrInvalid, what, err)
	}
	return nil
}

func checkNames(op, what string, names ...string) error {
	for _, s := range names {
		if err := checkName(op, what, s); err != nil {
			return err
		}
	}
	return nil
}

// checkURL checks a node's URL, a handshakeUrl entry.
func checkURL(s string) error {
	if u, err := url.Parse(s); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("%q is not a ws:// or wss:// URL with a host", s)
	}
	return nil
}

func checkNode(op string, n Node) error {
	if err := checkName(op, "node id", n.ID); err != nil {
		return err
	}
	if err := checkURL(n.URL); err != nil {
		return invalid(op, "node %s: url %v", n.ID, err)
	}
	if !n.State.Valid() {
		return invalid(op, "node %s: state %q", n.ID, n.State)
	}
	if len(n.Class) > maxClass {
		return invalid(op, "node %s: class longer than %d bytes", n.ID, maxClass)
	}
	if n.Capacity < 0 {
		return invalid(op, "node %s: negative capacity %d", n.ID, n.Capacity)
	}
	return nil
}

func checkLoad(op, id string, l Load) error {
	if l.Connections < 0 || !(l.CPU >= 0) || math.IsInf(l.CPU, 0) {
		return invalid(op, "node %s: load %+v", id, l)
	}
	return nil
}

func checkClient(op string, c Client) error {
	if err := checkName(op, "client id", c.ID); err != nil {
		return err
	}
	if err := checkName(op, "service", c.Service); err != nil {
		return err
	}
	if c.Tier != "" {
		return checkName(op, "tier", c.Tier)
	}
	return nil
}

func checkConnID(op, id string) error {
	if err := protocol.ValidConnID(id); err != nil {
		return fmt.Errorf("%s: %w: %w", op, ErrInvalid, err)
	}
	return nil
}

// checkConns validates a batch and fills in each Node from its ID.
func checkConns(op string, conns []Conn) ([]Conn, error) {
	out := slices.Clone(conns)
	for i := range out {
		c := &out[i]
		if err := checkConnID(op, c.ID); err != nil {
			return nil, err
		}
		node := protocol.ConnNode(c.ID)
		if c.Node == "" {
			c.Node = node
		} else if c.Node != node {
			return nil, invalid(op, "conn %s: node %q does not match its ID", c.ID, c.Node)
		}
		if err := checkName(op, "conn service", c.Service); err != nil {
			return nil, err
		}
		if err := checkName(op, "conn device", c.Device); err != nil {
			return nil, err
		}
		if c.Tier != "" {
			if err := checkName(op, "conn tier", c.Tier); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// checkService validates PutService's arguments and returns the default
// tier to use.
func checkService(op, name, defaultTier string, tiers []string) (string, error) {
	if defaultTier == "" {
		defaultTier = DefaultTier
	}
	if err := checkName(op, "service", name); err != nil {
		return "", err
	}
	if err := checkNames(op, "tier", append([]string{defaultTier}, tiers...)...); err != nil {
		return "", err
	}
	return defaultTier, nil
}

// checkAssignment validates SetAssignment's arguments.
func checkAssignment(op, service, tier string, nodes []string, ifVersion int64) error {
	if err := checkNames(op, "service/tier", service, tier); err != nil {
		return err
	}
	if err := checkNames(op, "node id", nodes...); err != nil {
		return err
	}
	if ifVersion < 0 {
		return invalid(op, "negative version %d", ifVersion)
	}
	seen := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		if seen[n] {
			return invalid(op, "node %q listed twice", n)
		}
		seen[n] = true
	}
	return nil
}

// sameRecord reports whether two node records differ only in load and
// heartbeat, which do not move the map version.
func sameRecord(a, b Node) bool {
	return a.URL == b.URL && a.State == b.State && a.Class == b.Class && a.Capacity == b.Capacity
}

// cloneService returns a deep copy of s.
func cloneService(s Service) Service {
	tiers := make(map[string][]string, len(s.Tiers))
	for t, nodes := range s.Tiers {
		tiers[t] = slices.Clone(nodes)
		if tiers[t] == nil {
			tiers[t] = []string{}
		}
	}
	s.Tiers = tiers
	return s
}

// putService applies PutService to s (nil: a new service) and reports
// whether it changed.
func putService(s *Service, name, defaultTier string, tiers []string) (Service, bool) {
	changed := s == nil
	if s == nil {
		s = &Service{Name: name, Tiers: map[string][]string{}}
	}
	if s.DefaultTier != defaultTier {
		s.DefaultTier, changed = defaultTier, true
	}
	for _, t := range append([]string{defaultTier}, tiers...) {
		if _, ok := s.Tiers[t]; !ok {
			s.Tiers[t], changed = []string{}, true
		}
	}
	return *s, changed
}

// assign adds node to s's tier and reports whether s changed.
func assign(s *Service, tier, node string) bool {
	nodes, ok := s.Tiers[tier]
	if slices.Contains(nodes, node) {
		return false
	}
	if !ok {
		nodes = []string{}
	}
	s.Tiers[tier] = append(nodes, node)
	return true
}

// unassign removes node from s's tier and reports whether s changed.
func unassign(s *Service, tier, node string) bool {
	nodes := s.Tiers[tier]
	i := slices.Index(nodes, node)
	if i < 0 {
		return false
	}
	s.Tiers[tier] = slices.Delete(nodes, i, i+1)
	return true
}

// unassignAll removes node from every tier of s and reports whether s changed.
func unassignAll(s *Service, node string) bool {
	changed := false
	for tier := range s.Tiers {
		changed = unassign(s, tier, node) || changed
	}
	return changed
}

// setTier replaces the nodes of s's tier and reports whether s changed.
func setTier(s *Service, tier string, nodes []string) bool {
	old, ok := s.Tiers[tier]
	if ok && slices.Equal(old, nodes) {
		return false
	}
	s.Tiers[tier] = append([]string{}, nodes...)
	return true
}

// newEpoch returns a random epoch name.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// checkLease checks a lease's name and holder (and its token, if asked).
func checkLease(op, name, holder string, token int64, needToken bool) error {
	if err := checkName(op, "lease name", name); err != nil {
		return err
	}
	if holder == "" || len(holder) > 256 {
		return invalid(op, "lease holder must be 1 to 256 bytes")
	}
	for _, c := range holder {
		if c < 0x20 || c == 0x7f {
			return invalid(op, "lease holder %q has a control character", holder)
		}
	}
	if needToken && token <= 0 {
		return invalid(op, "lease token %d", token)
	}
	return nil
}

func checkTTL(op string, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return invalid(op, "lease ttl %v is below 1ms", ttl)
	}
	return nil
}

// checkChanges checks the changes of an ApplyChanges call.
func checkChanges(op string, ifVersion int64, changes []Change) error {
	if ifVersion < 0 {
		return invalid(op, "negative version %d", ifVersion)
	}
	for i, c := range changes {
		switch {
		case c.Service != "" && c.Node == "" && c.State == "":
			if err := checkAssignment(op, c.Service, c.Tier, c.Nodes, 0); err != nil {
				return fmt.Errorf("change %d: %w", i, err)
			}
		case c.Node != "" && c.Service == "" && c.Tier == "" && len(c.Nodes) == 0:
			if err := checkName(op, "node id", c.Node); err != nil {
				return fmt.Errorf("change %d: %w", i, err)
			}
			if !c.State.Valid() {
				return invalid(op, "change %d: node %s: state %q", i, c.Node, c.State)
			}
		default:
			return invalid(op, "change %d: either a service's tier and its nodes, or a node and its state", i)
		}
	}
	return nil
}

// checkLog checks a log name and the bounds of a log call.
func checkLog(op, log string, n int) error {
	if err := checkName(op, "log name", log); err != nil {
		return err
	}
	if n <= 0 || n > 100_000 {
		return invalid(op, "count %d out of 1..100000", n)
	}
	return nil
}

// checkRevocation checks a revocation: a valid service and exactly one of a
// device (with NotBefore) or a token ID, and an Until.
func checkRevocation(op string, r Revocation) error {
	if err := checkName(op, "service", r.Service); err != nil {
		return err
	}
	switch {
	case r.Device != "" && r.TokenID != "":
		return invalid(op, "revocation of both a device and a token ID")
	case r.Device != "":
		if err := checkName(op, "device", r.Device); err != nil {
			return err
		}
		if r.NotBefore.IsZero() {
			return invalid(op, "device revocation without not_before")
		}
	case r.TokenID != "":
		if err := checkName(op, "token ID", r.TokenID); err != nil {
			return err
		}
	default:
		return invalid(op, "revocation of neither a device nor a token ID")
	}
	if r.Until.IsZero() {
		return invalid(op, "revocation without until")
	}
	return nil
}

// revocationField is a revocation's key among the others: "dev/<S>/<D>"
// or "jti/<S>/<ID>" (names hold no '/').
func revocationField(r Revocation) string {
	if r.Device != "" {
		return "dev/" + r.Service + "/" + r.Device
	}
	return "jti/" + r.Service + "/" + r.TokenID
}

// mergeRevocation returns what recording r over old keeps: the later
// NotBefore and the later Until.
func mergeRevocation(old, r Revocation) Revocation {
	if old.NotBefore.After(r.NotBefore) {
		r.NotBefore = old.NotBefore
	}
	if old.Until.After(r.Until) {
		r.Until = old.Until
	}
	return r
}
