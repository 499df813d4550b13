package bus

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Balancer rules (Decision.Rule).
const (
	RuleConnections      = "connections"       // connections per node over the pool's cap (1st, 10th embodiments)
	RuleConnectionsRatio = "connections_ratio" // the busiest node holds ratio× the idlest's connections (1st)
	RulePushRate         = "push_rate"         // pushes per second per node of a service (5th)
	RuleBytes            = "bytes"             // payload bytes per second per node of a service (6th)
	RuleLoad             = "load"              // the nodes' load (7th)
	RuleSleep            = "sleep"             // a node idle for long enough goes to sleep (8th)
)

// Move kinds (Move.Kind).
const (
	MoveAssign   = "assign"   // a node starts serving a service's tier
	MoveUnassign = "unassign" // a node stops serving a service's tier
	MoveDrain    = "drain"    // a node moves some of a service's connections away
	MoveWake     = "wake"     // a standby node is woken (state active)
	MoveSleep    = "sleep"    // a node is drained and put to sleep
)

// Decision is one balancer decision, published on
// Subjects.BalancerDecisions: the rule that fired, the figures behind it,
// the change it makes and the moves that carry the change out.
type Decision struct {
	At time.Time `json:"at"`
	// Balancer is the ID of the balancer that decided (the leader).
	Balancer string `json:"balancer"`
	// Round counts the leader's planning rounds.
	Round int64 `json:"round"`
	// Rule is one of the Rule* values.
	Rule string `json:"rule"`
	// Service, Tier and Node say what the rule fired on, where it applies.
	Service string `json:"service,omitempty"`
	Tier    string `json:"tier,omitempty"`
	Node    string `json:"node,omitempty"`
	// Figures are the numbers behind the decision, by name (for example
	// "connections_per_node" and "threshold").
	Figures map[string]float64 `json:"figures"`
	// Change says what changes, for people.
	Change string `json:"change"`
	// Moves carry the change out, in order.
	Moves []Move `json:"moves"`
	// DryRun: the balancer only publishes; nothing was changed.
	DryRun bool `json:"dry_run,omitempty"`
	// Applied: the change is in the store (and the moves were asked for).
	Applied bool `json:"applied"`
	// Error says why the decision could not be applied.
	Error string `json:"error,omitempty"`
	// MapVersion is the map version after the change.
	MapVersion int64 `json:"map_version,omitempty"`
}

// Move is one step of a decision.
type Move struct {
	// Kind is one of the Move* values.
	Kind    string `json:"kind"`
	Node    string `json:"node"`
	Service string `json:"service,omitempty"`
	Tier    string `json:"tier,omitempty"`
	// Connections is how many connections a drain asks to move (the
	// node's count of them for the service and tier when it was decided).
	Connections int `json:"connections,omitempty"`
	// How says how a standby node is woken or put to sleep: "hot" (a
	// running node, by control request) or "cold" (the operator's command).
	How string `json:"how,omitempty"`
}

// PublishDecision publishes d on Subjects.BalancerDecisions.
func PublishDecision(nc *nats.Conn, s Subjects, d Decision) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("bus: decision: %w", err)
	}
	if err := nc.Publish(s.BalancerDecisions(), b); err != nil {
		return fmt.Errorf("bus: publish decision: %w", err)
	}
	return nil
}

// ParseDecision decodes a Decision.
func ParseDecision(b []byte) (Decision, error) {
	var d Decision
	if err := json.Unmarshal(b, &d); err != nil {
		return Decision{}, fmt.Errorf("%w: decision: %w", ErrBadMessage, err)
	}
	if d.Rule == "" || d.Balancer == "" {
		return Decision{}, fmt.Errorf("%w: decision without rule or balancer", ErrBadMessage)
	}
	return d, nil
}
