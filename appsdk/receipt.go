package appsdk

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tetherhq/tether/bus"
)

// Status is the outcome of a push, merged over every node that answered.
type Status string

// Push outcomes.
const (
	// StatusAcked: every connection the push was written to acked.
	StatusAcked Status = bus.StatusAcked
	// StatusPartial: some connections acked; the rest timed out or closed.
	StatusPartial Status = bus.StatusPartial
	// StatusTimeout: nothing acked within the timeout, or no node answered
	// in time.
	StatusTimeout Status = bus.StatusTimeout
	// StatusOffline: no connection matched the target anywhere.
	StatusOffline Status = bus.StatusOffline
	// StatusClosed: every connection written to closed before it acked.
	StatusClosed Status = bus.StatusClosed
	// StatusSent: a NoAck push was written to Delivered connections.
	StatusSent Status = bus.StatusSent
	// StatusRejected: every node that answered refused the push;
	// Receipt.Error says why (bus.ErrCodeTooLarge, bus.ErrCodeBadRequest).
	StatusRejected Status = bus.StatusRejected
)

// Receipt is what a push returns: the outcome and the figures behind it,
// summed over the nodes that answered. It marshals to snake_case JSON.
type Receipt struct {
	Status Status `json:"status"`
	// MsgID is the push's message ID (WithMsgID), as echoed by the nodes.
	MsgID string `json:"msg_id,omitempty"`
	// Delivered counts connections the push was written to. For a node
	// whose final reply did not come in time, its progress reply's count is
	// used.
	Delivered int `json:"delivered"`
	// Acked counts connections that acked.
	Acked int `json:"acked"`
	// Closed counts connections that closed before acking.
	Closed int `json:"closed"`
	// Results counts acks by result: "ok", or what the device answered.
	Results map[string]int `json:"results,omitempty"`
	// Acks has one entry per ack for connection and device pushes (nodes
	// send only counts for group and service pushes).
	Acks []Ack `json:"acks,omitempty"`
	// Nodes are the nodes that answered, sorted.
	Nodes []string `json:"nodes,omitempty"`
	// Error is the rejection code when a node rejected the push.
	Error string `json:"error,omitempty"`
	// Missing are the nodes that announced connections the push targets
	// (a group or the whole service) but sent no final reply in time: the
	// receipt cannot say what became of their connections, so its status
	// is at best StatusPartial. Sorted.
	Missing []string `json:"missing,omitempty"`
	// Latency is the time from publishing the push to returning the
	// receipt; in JSON, latency_ms, in milliseconds rounded to three
	// decimals (the microsecond).
	Latency time.Duration `json:"-"`
}

// MarshalJSON writes the receipt with its latency as latency_ms, in
// milliseconds rounded to the microsecond (2841.302, not 2841.302417).
func (r Receipt) MarshalJSON() ([]byte, error) {
	type plain Receipt
	return json.Marshal(struct {
		plain
		LatencyMS float64 `json:"latency_ms"`
	}{plain(r), float64(r.Latency.Round(time.Microsecond)) / float64(time.Millisecond)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Receipt) UnmarshalJSON(b []byte) error {
	type plain Receipt
	var v struct {
		plain
		LatencyMS float64 `json:"latency_ms"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Receipt(v.plain)
	r.Latency = time.Duration(math.Round(v.LatencyMS * float64(time.Millisecond)))
	return nil
}

// Ack is one connection's answer to a push.
type Ack struct {
	Conn   string `json:"conn"`
	Device string `json:"device"`
	// Node is the node holding the connection.
	Node string `json:"node"`
	// Result is "ok" or what the device answered (e.g. "rejected", "busy").
	Result string `json:"result"`
	// Data is what the device sent with its ack, if anything: JSON, or,
	// with Enc "base64", a JSON string holding the base64 of bytes that
	// were not JSON. Bytes decodes either.
	Data json.RawMessage `json:"data,omitempty"`
	Enc  string          `json:"enc,omitempty"`
}

// Bytes returns the data the device sent with its ack: the JSON as sent,
// or the decoded bytes when it sent them base64-encoded.
func (a Ack) Bytes() ([]byte, error) {
	if a.Enc == "" {
		return a.Data, nil
	}
	if a.Enc != "base64" {
		return nil, fmt.Errorf("appsdk: ack data in unknown encoding %q", a.Enc)
	}
	var s string
	if err := json.Unmarshal(a.Data, &s); err != nil {
		return nil, fmt.Errorf("appsdk: base64 ack data is not a string: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("appsdk: ack data: %w", err)
	}
	return b, nil
}

// Result returns the result of the single ack of a connection push (or of
// a device push that reached one connection), and "" when there is not
// exactly one ack.
func (r Receipt) Result() string {
	if len(r.Acks) != 1 {
		return ""
	}
	return r.Acks[0].Result
}

// gather collects the replies of one push and decides when it is complete,
// following the gathering rules of docs/subjects.md. It is used by one
// goroutine at a time.
type gather struct {
	kind    bus.TargetKind
	noAck   bool
	waitAll bool

	noResponders bool
	// nodes in order of first answer; a handful at most, so a slice.
	nodes []nodeReplies
	// finals counts nodes whose final reply is in.
	finals int
	// ackedFinal: some final reply reported an ack.
	ackedFinal bool
	// expected, for group and service pushes, returns the nodes that hold
	// a target, as they announced it.
	expected func() []string
}

type nodeReplies struct {
	node      string
	delivered int // from the progress reply
	final     *bus.Reply
}

func (g *gather) node(name string) *nodeReplies {
	for i := range g.nodes {
		if g.nodes[i].node == name {
			return &g.nodes[i]
		}
	}
	g.nodes = append(g.nodes, nodeReplies{node: name})
	return &g.nodes[len(g.nodes)-1]
}

// add records one reply.
func (g *gather) add(r *bus.Reply) {
	n := g.node(r.Node)
	if !r.Final {
		n.delivered = max(n.delivered, r.Delivered)
		return
	}
	if n.final != nil {
		return // a duplicate; the first final reply stands
	}
	n.final = r
	g.finals++
	if r.Acked > 0 {
		g.ackedFinal = true
	}
}

// done reports whether the push is complete. settled says whether the
// settle window has passed since publishing.
func (g *gather) done(settled bool) bool {
	if g.noResponders {
		return true
	}
	if g.kind == bus.TargetConn {
		return g.finals > 0
	}
	if len(g.nodes) == 0 || g.finals < len(g.nodes) {
		return false
	}
	if g.kind == bus.TargetDevice && !g.waitAll && g.ackedFinal {
		return true
	}
	return settled && len(g.missing()) == 0
}

// missing returns the expected nodes without a final reply.
func (g *gather) missing() []string {
	if g.expected == nil {
		return nil
	}
	var out []string
	for _, n := range g.expected() {
		if r := g.find(n); r == nil || r.final == nil {
			out = append(out, n)
		}
	}
	return out
}

func (g *gather) find(name string) *nodeReplies {
	for i := range g.nodes {
		if g.nodes[i].node == name {
			return &g.nodes[i]
		}
	}
	return nil
}

// empty reports whether nothing at all has come back.
func (g *gather) empty() bool { return !g.noResponders && len(g.nodes) == 0 }

// receipt merges the replies into a Receipt.
func (g *gather) receipt(msgID string) Receipt {
	r := Receipt{MsgID: msgID}
	if g.noResponders {
		r.Status = StatusOffline
		return r
	}
	r.Missing = g.missing()
	slices.Sort(r.Missing)
	if len(g.nodes) == 0 {
		r.Status = StatusTimeout
		return r
	}
	answered := 0
	for i := range g.nodes {
		n := &g.nodes[i]
		r.Nodes = append(r.Nodes, n.node)
		f := n.final
		if f == nil {
			// Written, but its final reply did not come in time.
			answered++
			r.Delivered += n.delivered
			continue
		}
		if r.MsgID == "" {
			r.MsgID = f.MsgID
		}
		if f.Status == bus.StatusRejected {
			if r.Error == "" {
				r.Error = f.Error
			}
			continue
		}
		answered++
		r.Delivered += f.Delivered
		r.Acked += f.Acked
		r.Closed += f.Closed
		for k, v := range f.Results {
			if r.Results == nil {
				r.Results = make(map[string]int, len(f.Results))
			}
			r.Results[k] += v
		}
		for _, a := range f.Acks {
			r.Acks = append(r.Acks, Ack{Conn: a.Conn, Device: a.Device, Node: f.Node, Result: a.Result, Data: a.Data, Enc: a.Enc})
		}
	}
	slices.Sort(r.Nodes)
	missing := len(r.Missing) > 0
	switch {
	case answered == 0 && !missing:
		r.Status = StatusRejected
	case g.noAck && r.Delivered > 0:
		r.Status = StatusSent
	case r.Delivered == 0 && !missing:
		r.Status = StatusOffline
	case r.Acked >= r.Delivered && r.Acked > 0 && !missing:
		r.Status = StatusAcked
	case r.Acked > 0:
		r.Status = StatusPartial // some acked; the rest, or what missing nodes hold, did not
	case r.Closed >= r.Delivered && r.Delivered > 0 && !missing:
		r.Status = StatusClosed
	default:
		r.Status = StatusTimeout
	}
	return r
}
