package bus

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/protocol"
)

// Messages between tether processes. Each has one type here, one encoder
// and one decoder; no other package builds or parses them. docs/subjects.md
// documents each with an example body.

// ErrBadMessage is returned by the decoders for a message that is not what
// its subject promises.
var ErrBadMessage = errors.New("bus: malformed message")

// Sources of map changes (MapChanged.Source).
const (
	// SourceDirectory: an admin change made through a directory (admin
	// API, `tether admin`, a seed). Client mappings may have changed.
	SourceDirectory = "directory"
	// SourceNode: a node's own coming or going, or its URL put back.
	SourceNode = "node"
	// SourceBalancer: the balancer changed assignments or node states.
	SourceBalancer = "balancer"
)

// Reasons of map changes (MapChanged.Reason).
const (
	ReasonStarted  = "started"  // a node registered at start
	ReasonDraining = "draining" // a node began its graceful stop
	ReasonURL      = "url"      // a node put its own URL back in the registry
	ReasonStopped  = "stopped"  // a node left the registry at the end of its stop
	ReasonState    = "state"    // a node's state changed (control request)
	ReasonAdmin    = "admin"    // an admin change
	ReasonSeed     = "seed"     // a seed was applied
	ReasonReseed   = "reseed"   // the store was found empty and re-seeded
	ReasonBalance  = "balance"  // a balancer decision
)

// MapChanged tells directories (and anyone listening) that the service ->
// node map changed, so that they reload it now rather than at their next
// periodic refresh. It is published on Subjects.MapChanged.
type MapChanged struct {
	// Version is the map version after the change, when the sender knows
	// it (0 otherwise).
	Version int64 `json:"version,omitempty"`
	// Source says who changed the map: SourceDirectory, SourceNode or
	// SourceBalancer.
	Source string `json:"source"`
	// Node is the node concerned, when there is one.
	Node string `json:"node,omitempty"`
	// Service is the service concerned, when there is one.
	Service string `json:"service,omitempty"`
	// Reason is one of the Reason* values.
	Reason string `json:"reason"`
}

// ClientsMayHaveChanged reports whether the change may have touched client
// mappings (client -> service and tier): only admin changes do.
func (m MapChanged) ClientsMayHaveChanged() bool {
	return m.Source != SourceNode && m.Source != SourceBalancer
}

// PublishMapChanged publishes m on Subjects.MapChanged.
func PublishMapChanged(nc *nats.Conn, s Subjects, m MapChanged) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("bus: map changed: %w", err)
	}
	if err := nc.Publish(s.MapChanged(), b); err != nil {
		return fmt.Errorf("bus: publish map changed: %w", err)
	}
	return nil
}

// ParseMapChanged decodes a MapChanged message.
func ParseMapChanged(b []byte) (MapChanged, error) {
	var m MapChanged
	if err := json.Unmarshal(b, &m); err != nil {
		return MapChanged{}, fmt.Errorf("%w: map changed: %w", ErrBadMessage, err)
	}
	switch m.Source {
	case SourceDirectory, SourceNode, SourceBalancer:
	default:
		return MapChanged{}, fmt.Errorf("%w: map changed: unknown source %q", ErrBadMessage, m.Source)
	}
	return m, nil
}

// PublishNodeStats publishes st on its node's stats subject.
func PublishNodeStats(nc *nats.Conn, s Subjects, st NodeStats) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("bus: node stats: %w", err)
	}
	if err := nc.Publish(s.NodeStats(st.Node), b); err != nil {
		return fmt.Errorf("bus: publish node stats: %w", err)
	}
	return nil
}

// ParseNodeStats decodes a NodeStats message.
func ParseNodeStats(b []byte) (NodeStats, error) {
	var st NodeStats
	if err := json.Unmarshal(b, &st); err != nil {
		return NodeStats{}, fmt.Errorf("%w: node stats: %w", ErrBadMessage, err)
	}
	if err := protocol.ValidName(st.Node); err != nil {
		return NodeStats{}, fmt.Errorf("%w: node stats: node: %w", ErrBadMessage, err)
	}
	return st, nil
}

// PublishInterest publishes a node's Interest in a service on
// Subjects.Interest.
func PublishInterest(nc *nats.Conn, s Subjects, a Interest) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("bus: interest: %w", err)
	}
	if err := nc.Publish(s.Interest(a.Service), b); err != nil {
		return fmt.Errorf("bus: publish interest: %w", err)
	}
	return nil
}

// ParseInterest decodes an Interest.
func ParseInterest(b []byte) (Interest, error) {
	var a Interest
	if err := json.Unmarshal(b, &a); err != nil {
		return Interest{}, fmt.Errorf("%w: interest: %w", ErrBadMessage, err)
	}
	if protocol.ValidName(a.Node) != nil || protocol.ValidName(a.Service) != nil || a.Connections < 0 || a.TTLMS <= 0 {
		return Interest{}, fmt.Errorf("%w: interest: bad node, service, connections or ttl_ms", ErrBadMessage)
	}
	return a, nil
}

// InterestQueryService returns the service of an interest query subject
// ("" when subject is not one).
func InterestQueryService(s Subjects, subject string) string {
	rest, ok := strings.CutPrefix(subject, s.prefix+".svc.")
	if !ok {
		return ""
	}
	service, ok := strings.CutSuffix(rest, ".nodes.q")
	if !ok || protocol.ValidName(service) != nil {
		return ""
	}
	return service
}

// Node event types (NodeEvent.Type).
const (
	// NodeEventDropped: the node dropped pushes its queues could not hold
	// (see docs/subjects.md, what fire-and-forget may lose).
	NodeEventDropped = "dropped"
)

// NodeEvent is an advisory a node publishes on Subjects.NodeEvents when
// apps and operators must know something went wrong, such as pushes it
// dropped. It is published at most once per stats interval per type.
type NodeEvent struct {
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	Type string    `json:"type"`
	// Dropped counts the pushes dropped since the previous event; Total
	// since the node started.
	Dropped int64 `json:"dropped,omitempty"`
	Total   int64 `json:"total,omitempty"`
	// Message says what happened, for people.
	Message string `json:"message,omitempty"`
}

// PublishNodeEvent publishes ev on its node's events subject.
func PublishNodeEvent(nc *nats.Conn, s Subjects, ev NodeEvent) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("bus: node event: %w", err)
	}
	if err := nc.Publish(s.NodeEvents(ev.Node), b); err != nil {
		return fmt.Errorf("bus: publish node event: %w", err)
	}
	return nil
}

// ParseNodeEvent decodes a NodeEvent.
func ParseNodeEvent(b []byte) (NodeEvent, error) {
	var ev NodeEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return NodeEvent{}, fmt.Errorf("%w: node event: %w", ErrBadMessage, err)
	}
	if ev.Type == "" || protocol.ValidName(ev.Node) != nil {
		return NodeEvent{}, fmt.Errorf("%w: node event without type or node", ErrBadMessage)
	}
	return ev, nil
}

// Node control operations (ControlRequest.Op).
const (
	// OpDrain moves connections away: each is sent a reconnect frame, at
	// ControlRequest.Rate per second, and those still open after the grace
	// are closed with 4100. With Service set, only that service's
	// connections move; otherwise all of them (the node keeps running).
	OpDrain = "drain"
	// OpSetState changes the node's state in the registry (active,
	// standby, sleep). A node put in standby or sleep drains all its
	// connections first.
	OpSetState = "set_state"
	// OpInfo asks for the node's state and connection count.
	OpInfo = "info"
)

// ControlRequest is a request on a node's control subject
// (Subjects.NodeCtl), sent by the balancer or an operator. The node answers
// with a ControlReply.
type ControlRequest struct {
	Op string `json:"op"`
	// Service limits a drain to one service's connections.
	Service string `json:"service,omitempty"`
	// Tiers, with Service, limits a drain to that service's connections of
	// these tiers ("" stands for connections whose token has no tier).
	// Absent: every tier.
	Tiers []string `json:"tiers,omitempty"`
	// Count, when above 0, limits a drain to that many of the matching
	// connections (the balancer moves part of a busy node's devices).
	Count int `json:"count,omitempty"`
	// GraceMS is how long a drain gives devices to leave before the rest
	// are closed. 0: the node's shutdown_grace.
	GraceMS int64 `json:"grace_ms,omitempty"`
	// Rate is how many reconnect frames a drain sends per second. 0: they
	// are spread at random over half the grace.
	Rate int `json:"rate,omitempty"`
	// State is the new state, with OpSetState: "active", "standby" or
	// "sleep".
	State string `json:"state,omitempty"`
	// Reason is recorded in the node's logs and in the reconnect frames
	// (default "drain").
	Reason string `json:"reason,omitempty"`
}

// Grace returns GraceMS as a duration.
func (r ControlRequest) Grace() time.Duration { return time.Duration(r.GraceMS) * time.Millisecond }

// Validate checks a request; errors say what is wrong.
func (r ControlRequest) Validate() error {
	switch r.Op {
	case OpDrain:
		if r.Service != "" {
			if err := protocol.ValidName(r.Service); err != nil {
				return fmt.Errorf("%w: control: service: %w", ErrBadMessage, err)
			}
		}
		if len(r.Tiers) > 0 && r.Service == "" {
			return fmt.Errorf("%w: control: tiers without service", ErrBadMessage)
		}
		for _, t := range r.Tiers {
			if t == "" {
				continue
			}
			if err := protocol.ValidName(t); err != nil {
				return fmt.Errorf("%w: control: tier: %w", ErrBadMessage, err)
			}
		}
	case OpSetState:
		switch r.State {
		case "active", "standby", "sleep":
		default:
			return fmt.Errorf("%w: control: state %q is not active, standby or sleep", ErrBadMessage, r.State)
		}
	case OpInfo:
	default:
		return fmt.Errorf("%w: control: unknown op %q", ErrBadMessage, r.Op)
	}
	if r.GraceMS < 0 || r.Rate < 0 || r.Count < 0 {
		return fmt.Errorf("%w: control: negative grace_ms, rate or count", ErrBadMessage)
	}
	return nil
}

// ParseControlRequest decodes and validates a ControlRequest.
func ParseControlRequest(b []byte) (ControlRequest, error) {
	var r ControlRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return ControlRequest{}, fmt.Errorf("%w: control: %w", ErrBadMessage, err)
	}
	return r, r.Validate()
}

// ControlReply is a node's answer to a ControlRequest.
type ControlReply struct {
	Node string `json:"node"`
	OK   bool   `json:"ok"`
	// Error says why the request was refused (OK false).
	Error string `json:"error,omitempty"`
	// State is the node's state after the request.
	State string `json:"state,omitempty"`
	// Connections is the number of connections the node holds.
	Connections int `json:"connections"`
	// Draining is the number of connections a drain is moving.
	Draining int `json:"draining,omitempty"`
}

// Encode returns the reply's JSON.
func (r ControlReply) Encode() []byte {
	b, _ := json.Marshal(r) // plain fields: cannot fail
	return b
}

// ErrControl is returned by RequestControl when the node refused a request.
var ErrControl = errors.New("bus: control request refused")

// RequestControl sends req to node's control subject and returns its
// reply. It fails with nats.ErrNoResponders when the node is not running,
// and wraps ErrControl when it refused.
func RequestControl(ctx context.Context, nc *nats.Conn, s Subjects, node string, req ControlRequest) (ControlReply, error) {
	if err := req.Validate(); err != nil {
		return ControlReply{}, err
	}
	b, err := json.Marshal(req)
	if err != nil {
		return ControlReply{}, fmt.Errorf("bus: control: %w", err)
	}
	m, err := nc.RequestWithContext(ctx, s.NodeCtl(node), b)
	if err != nil {
		return ControlReply{}, fmt.Errorf("bus: control %s %s: %w", node, req.Op, err)
	}
	var r ControlReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return ControlReply{}, fmt.Errorf("%w: control reply: %w", ErrBadMessage, err)
	}
	if !r.OK {
		return r, fmt.Errorf("%w: %s: %s", ErrControl, node, r.Error)
	}
	return r, nil
}

// Takeover tells every node that holds an older connection of a device to
// close it with 4005 "replaced". The node where the device authenticated
// publishes it on the device's push subject, without a reply subject (see
// docs/subjects.md, node-to-node headers).
type Takeover struct {
	Service string
	Device  string
	// Conn is the new connection's ID.
	Conn string
	// Since is the new connection's start, in Unix nanoseconds.
	Since int64
}

// Takeover headers.
const (
	headerSince      = "Tether-Since"
	headerControlSig = "Tether-Control-Sig"
)

// Msg builds the takeover message, signed with secret (the cluster
// secret) when there is one.
func (t Takeover) Msg(s Subjects, secret []byte) *nats.Msg {
	m := nats.NewMsg(s.Device(t.Service, t.Device))
	since := strconv.FormatInt(t.Since, 10)
	m.Header.Set(HeaderControl, ControlTakeover)
	m.Header.Set(HeaderConn, t.Conn)
	m.Header.Set(headerSince, since)
	if len(secret) > 0 {
		m.Header.Set(headerControlSig, takeoverMAC(secret, t.Service, t.Device, t.Conn, since))
	}
	return m
}

// ErrBadSignature is returned by ParseTakeover for a takeover whose
// signature does not verify.
var ErrBadSignature = errors.New("bus: takeover signature does not verify")

// ParseTakeover reads a takeover from m, a message with HeaderControl
// ControlTakeover on the device subject target. With a secret, only a
// message signed with it is accepted.
func ParseTakeover(m *nats.Msg, target Target, secret []byte) (Takeover, error) {
	if target.Kind != TargetDevice || m.Header.Get(HeaderControl) != ControlTakeover {
		return Takeover{}, fmt.Errorf("%w: takeover on %s", ErrBadMessage, m.Subject)
	}
	t := Takeover{Service: target.Service, Device: target.Key, Conn: m.Header.Get(HeaderConn)}
	since := m.Header.Get(headerSince)
	if len(secret) > 0 && !hmac.Equal([]byte(m.Header.Get(headerControlSig)), []byte(takeoverMAC(secret, t.Service, t.Device, t.Conn, since))) {
		return Takeover{}, ErrBadSignature
	}
	var err error
	if t.Since, err = strconv.ParseInt(since, 10, 64); err != nil {
		return Takeover{}, fmt.Errorf("%w: takeover: %s: %w", ErrBadMessage, headerSince, err)
	}
	if err := protocol.ValidConnID(t.Conn); err != nil {
		return Takeover{}, fmt.Errorf("%w: takeover: %w", ErrBadMessage, err)
	}
	return t, nil
}

// takeoverMAC is the HMAC-SHA256, keyed with the cluster secret, of a
// takeover's fields, base64url without padding.
func takeoverMAC(secret []byte, service, device, conn, since string) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ControlTakeover + "\x00" + service + "\x00" + device + "\x00" + conn + "\x00" + since))
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
