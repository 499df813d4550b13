package bus

import (
	"encoding/json"
	"time"
)

// NATS header names. NATS headers are case-sensitive: clients in other
// languages must use these exact spellings.
const (
	// HeaderTimeout, on a push, is how long in milliseconds the node waits
	// for acks before it gives up and sends its final reply. Absent: the
	// node's default ack timeout.
	HeaderTimeout = "Tether-Timeout"
	// HeaderMsgID, on a push, is the app's own message ID. It is copied into
	// the push frame as "msgId" and into every reply.
	HeaderMsgID = "Tether-Msg-Id"
	// HeaderAck, on a push, set to AckNone, asks for no acks: devices are
	// told not to ack and each node replies once with what it wrote.
	HeaderAck = "Tether-Ack"

	// Identity headers on upstream messages and events.
	HeaderService = "Tether-Service"
	HeaderDevice  = "Tether-Device"
	HeaderConn    = "Tether-Conn"
	HeaderNode    = "Tether-Node"
	HeaderTier    = "Tether-Tier"
	// HeaderEvent names the event type on an events message.
	HeaderEvent = "Tether-Event"
	// HeaderControl marks a node-to-node control message sent on a push
	// subject (see ControlTakeover).
	HeaderControl = "Tether-Control"
)

// Header values.
const (
	// AckNone is the HeaderAck value that turns acks off.
	AckNone = "none"
	// ControlTakeover, on a device subject, tells every node that holds an
	// older connection of the device (HeaderConn names the new one) to close
	// it with the "replaced" close code.
	ControlTakeover = "takeover"
)

// Reply statuses, as sent by nodes in Reply.Status.
const (
	// StatusAcked: every connection written to acked.
	StatusAcked = "acked"
	// StatusPartial: some, not all, of the connections written to acked
	// before the ack timeout or before they closed.
	StatusPartial = "partial"
	// StatusTimeout: nothing was acked within the ack timeout.
	StatusTimeout = "timeout"
	// StatusOffline: the target has no connection on this node (or, as the
	// SDK reports it, anywhere).
	StatusOffline = "offline"
	// StatusClosed: every connection written to closed before it acked.
	StatusClosed = "closed"
	// StatusDelivered: a progress reply for a fan-out push: the frames are
	// written, acks are awaited, a final reply follows.
	StatusDelivered = "delivered"
	// StatusSent: the final reply of a push sent with HeaderAck: none.
	StatusSent = "sent"
	// StatusRejected: the node refused the push; Error says why.
	StatusRejected = "rejected"
)

// Reply errors, as sent by nodes in Reply.Error with StatusRejected.
const (
	ErrCodeTooLarge   = "too_large"
	ErrCodeBadRequest = "bad_request"
)

// Reply is the JSON body a node sends to the reply subject of a push
// request. A push to a connection gets exactly one final reply. A push to a
// device, group or service gets, from every node holding a matching
// connection, one progress reply (Final false, Status "delivered") as soon as
// the frames are written, then one final reply when every ack is in or the
// ack timeout has passed; with acks off, a single final reply.
type Reply struct {
	Node   string `json:"node"`
	Final  bool   `json:"final"`
	Status string `json:"status"`
	MsgID  string `json:"msg_id,omitempty"`
	// Delivered counts connections the push frame was written to.
	Delivered int `json:"delivered"`
	// Acked counts connections that acked.
	Acked int `json:"acked"`
	// Closed counts connections that closed before they acked.
	Closed int `json:"closed,omitempty"`
	// Results counts acks by their result ("ok", or what the device said).
	Results map[string]int `json:"results,omitempty"`
	// Acks lists each ack for pushes to a connection or a device. For group
	// and service pushes only the counts are sent.
	Acks []Ack `json:"acks,omitempty"`
	// Error is set with StatusRejected.
	Error string `json:"error,omitempty"`
}

// HeaderProgress, on a push, set to ProgressNone, asks the nodes for their
// final reply only (no progress reply): with a plain NATS request to a
// device, the one reply is then the receipt.
const (
	HeaderProgress = "Tether-Progress"
	ProgressNone   = "none"
)

// Ack is one device's answer to a push.
type Ack struct {
	Conn   string `json:"conn"`
	Device string `json:"device"`
	Result string `json:"result"`
	// Data is what the device sent with its ack: JSON, or, with Enc
	// "base64", a JSON string holding the base64 of bytes that were not.
	Data json.RawMessage `json:"data,omitempty"`
	Enc  string          `json:"enc,omitempty"`
}

// Event types.
const (
	EventConnected    = "connected"
	EventDisconnected = "disconnected"
)

// Event is a connected or disconnected event, published on Subjects.Events.
type Event struct {
	Type    string    `json:"type"`
	Service string    `json:"service"`
	Device  string    `json:"device"`
	Conn    string    `json:"conn"`
	Node    string    `json:"node"`
	Tier    string    `json:"tier,omitempty"`
	Groups  []string  `json:"groups,omitempty"`
	At      time.Time `json:"at"`
	// Reason is why a connection ended (disconnected): a close reason such
	// as "client_closed", "ping_timeout", "shutdown", "node_lost". On a
	// connected event it is "" or "resync": the connection was announced
	// node_lost by mistake and is still open.
	Reason string `json:"reason,omitempty"`
	// Code is the WebSocket close code sent or received (disconnected only).
	Code int `json:"code,omitempty"`
	// Since is when the connection was opened (disconnected only).
	Since time.Time `json:"since,omitzero"`
}

// Interest is what a node announces on Subjects.Interest about one
// service: whether it holds connections of it, and in which groups, so
// that an app gathering the replies of a group or service push knows which
// nodes to wait for. A node publishes it when that changes (within about
// 50ms), again every stats interval while it holds any, once with
// Connections 0 when it holds none any more, and in answer to a query on
// Subjects.InterestQuery.
type Interest struct {
	Node    string `json:"node"`
	Service string `json:"service"`
	// Connections is how many connections of the service the node holds.
	Connections int `json:"connections"`
	// Groups are the groups of those connections.
	Groups []string `json:"groups,omitempty"`
	// TTLMS is how long the announcement holds without a newer one, in
	// milliseconds: a node silent for longer is not waited for.
	TTLMS int64 `json:"ttl_ms"`
	// Seq orders a node's announcements (a newer one replaces an older).
	Seq int64 `json:"seq"`
}

// NodeStats is what a node publishes on Subjects.NodeStats every stats interval.
type NodeStats struct {
	Node        string                  `json:"node"`
	URL         string                  `json:"url"`
	At          time.Time               `json:"at"`
	Connections int                     `json:"connections"`
	Services    map[string]ServiceStats `json:"services"`
	// CPU is the node's load: the share of the host's CPUs the node process
	// used over the last second, from 0 to 1 (node.Load, the figure the
	// registry, the directory and the balancer use too).
	CPU float64 `json:"cpu"`
	// Class and Capacity are the node's node.class and node.capacity.
	Class    string `json:"class,omitempty"`
	Capacity int    `json:"capacity,omitempty"`
	// LagMS is the longest scheduling delay seen over the interval, in
	// milliseconds: how late a goroutine of the node got to run when it
	// was due (its event-loop lag). It grows when the node runs out of CPU.
	LagMS float64 `json:"lag_ms"`
	// Queued is the most pushes seen waiting in the node's dispatch queues
	// over the interval (sampled every second).
	Queued int `json:"queued"`
	// MemoryBytes is the Go runtime's memory obtained from the OS.
	MemoryBytes uint64 `json:"memory_bytes"`
	Goroutines  int    `json:"goroutines"`
	// IntervalMS is the length of the interval the rates cover.
	IntervalMS int64 `json:"interval_ms"`
	// Disconnects counts the connections that closed in the interval, by
	// reason (the reasons of tether_node_disconnects_total).
	Disconnects map[string]int64 `json:"disconnects,omitempty"`
}

// LatencyBoundsMS are the upper bounds, in milliseconds, of the latency
// buckets of ServiceStats.Latency (and of the nodes' latency histograms);
// a last bucket counts everything above the last bound.
var LatencyBoundsMS = []float64{0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000}

// ServiceStats is one service's share of a node's load.
type ServiceStats struct {
	// Connections by tier ("" for no tier).
	Connections map[string]int `json:"connections"`
	// Pushes is the number of push frames written in the interval.
	Pushes int64 `json:"pushes"`
	// Bytes is the number of push payload bytes written in the interval.
	Bytes int64 `json:"bytes"`
	// Upstream is the number of upstream messages received in the interval.
	Upstream int64 `json:"upstream"`
	// Requests is the number of push requests for the service the node
	// handled in the interval; Acked, Offline and Timeouts those of them
	// that ended acked by every connection written to, found no
	// connection on this node, or ended with acks missing.
	Requests int64 `json:"requests,omitempty"`
	Acked    int64 `json:"acked,omitempty"`
	Offline  int64 `json:"offline,omitempty"`
	Timeouts int64 `json:"timeouts,omitempty"`
	// Latency counts the acked pushes of the interval by push-to-receipt
	// latency: Latency[i] those at most LatencyBoundsMS[i], the last entry
	// those above every bound. Absent when there were none.
	Latency []int64 `json:"latency,omitempty"`
}
