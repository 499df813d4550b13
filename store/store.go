// Package store holds tether's shared state: the nodes, the service -> node
// map per tier, the client -> service/tier map and the connection registry
// (the patent's service/node DB 600 and connection/node DB 700).
//
// Two implementations pass one conformance suite (storetest): Memory, the
// single-binary default, and Redis, for a cluster of processes (one Redis,
// Sentinel or Cluster through go-redis's UniversalClient).
//
// All methods are safe for concurrent use. Errors wrap the sentinels below;
// a Redis failure wraps ErrUnavailable.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors.
var (
	ErrNotFound    = errors.New("store: not found")
	ErrExists      = errors.New("store: already exists")
	ErrInvalid     = errors.New("store: invalid argument")
	ErrUnavailable = errors.New("store: unavailable")
	// ErrConflict is returned when an optimistic update lost a race more
	// times than it retries, or when a conditional change found another
	// map version than it was given.
	ErrConflict = errors.New("store: concurrent update conflict")
	// ErrLeaseHeld is returned by AcquireLease when another holder has the
	// lease.
	ErrLeaseHeld = errors.New("store: lease held by another")
	// ErrLeaseLost is returned by RenewLease and ApplyChanges when the
	// lease expired or another holder took it: a write fenced with it is
	// refused.
	ErrLeaseLost = errors.New("store: lease lost")
)

// Lease is a named lock that one holder has until it expires or releases
// it, with a fencing token: every new holder gets a larger token than any
// before, and writes fenced with a lease (ApplyChanges) are refused once
// the holder has lost it. The balancer elects its leader with one.
type Lease struct {
	Name   string `json:"name"`
	Holder string `json:"holder"`
	Token  int64  `json:"token"`
}

// The lease and log names tether uses.
const (
	// LeaseBalancer is the lease the balancers elect their leader with.
	LeaseBalancer = "balancer"
	// LeaseReseed is taken by the directory that re-applies the seed to a
	// store found empty, so that one directory does it.
	LeaseReseed = "reseed"
	// LogDecisions is the log the leading balancer records its decisions
	// in (JSON bus.Decision records).
	LogDecisions = "decisions"
)

// Change is one change made by ApplyChanges: either the nodes of a
// service's tier (Service, Tier and Nodes, in order; an empty Nodes empties
// the tier), or a node's state (Node and State).
type Change struct {
	Service string    `json:"service,omitempty"`
	Tier    string    `json:"tier,omitempty"`
	Nodes   []string  `json:"nodes,omitempty"`
	Node    string    `json:"node,omitempty"`
	State   NodeState `json:"state,omitempty"`
}

// NodeState is the lifecycle state of a node.
type NodeState string

// Node states.
const (
	// StateActive nodes serve the services assigned to them; only they are
	// listed by the directory.
	StateActive NodeState = "active"
	// StateStandby nodes run but serve nothing until woken.
	StateStandby NodeState = "standby"
	// StateDraining nodes are moving their connections away.
	StateDraining NodeState = "draining"
	// StateSleep nodes are stopped (or to be stopped) to save cost.
	StateSleep NodeState = "sleep"
)

// Valid reports whether s is a known state.
func (s NodeState) Valid() bool {
	switch s {
	case StateActive, StateStandby, StateDraining, StateSleep:
		return true
	}
	return false
}

// Node is a node's record.
type Node struct {
	ID string `json:"id"`
	// URL is the WebSocket URL devices connect to (a handshakeUrl entry).
	URL   string    `json:"url"`
	State NodeState `json:"state"`
	// Class is a free-form node class such as "high-spec".
	Class string `json:"class,omitempty"`
	// Capacity is the most connections the node should hold; 0 = no limit.
	Capacity int `json:"capacity,omitempty"`
	// Load, as last reported by the node's heartbeat.
	Load Load `json:"load"`
	// Heartbeat is when the node was last heard of; zero for a node that was
	// only declared (by an operator) and never ran.
	Heartbeat time.Time `json:"heartbeat,omitzero"`
}

// DeadAfter is how long after its last heartbeat a node is taken for dead,
// given the heartbeat interval: two intervals plus a one-second margin.
// Every process judges liveness with it (nodes' reapers, directories, the
// balancer), from the heartbeat interval they are configured with.
func DeadAfter(heartbeat time.Duration) time.Duration { return 2*heartbeat + time.Second }

// Live reports whether the node's last heartbeat is younger than ttl.
func (n Node) Live(now time.Time, ttl time.Duration) bool {
	return !n.Heartbeat.IsZero() && now.Sub(n.Heartbeat) < ttl
}

// Load is what a node reports of itself with each heartbeat.
type Load struct {
	Connections int `json:"connections"`
	// CPU is the node process's CPU use over the last heartbeat interval,
	// as a fraction of the machine's CPUs (0 to 1).
	CPU float64 `json:"cpu"`
	// NATSDown is set while the node has lost NATS: it refuses new
	// devices (4104) and cannot deliver pushes, so directories do not
	// list it. Its connections stay registered: it is alive.
	NATSDown bool `json:"nats_down,omitempty"`
}

// Service is a service's entry in the map: its node IDs per tier.
type Service struct {
	Name string `json:"name"`
	// DefaultTier is the tier used when a lookup does not resolve one.
	DefaultTier string `json:"default_tier"`
	// Tiers maps each tier name to the IDs of the nodes serving it, in the
	// order they were assigned.
	Tiers map[string][]string `json:"tiers"`
}

// Client maps a client (device) ID to its service and tier (the patent's
// correspondences 620C and 620D).
type Client struct {
	ID      string `json:"id"`
	Service string `json:"service"`
	Tier    string `json:"tier,omitempty"`
}

// Conn is one connection in the registry. Its ID is "<node>.<local>".
type Conn struct {
	ID      string    `json:"id"`
	Node    string    `json:"node"`
	Service string    `json:"service"`
	Device  string    `json:"device"`
	Tier    string    `json:"tier,omitempty"`
	Since   time.Time `json:"since"`
}

// Revocation denies tokens of a service before they expire: those of
// Device whose chain began before NotBefore (a device revocation), or the
// one with ID TokenID (a token revocation). Until is when it stops
// mattering and may be forgotten.
type Revocation struct {
	Service   string    `json:"service"`
	Device    string    `json:"device,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	TokenID   string    `json:"token_id,omitempty"`
	Until     time.Time `json:"until"`
}

// Map is a consistent snapshot of the nodes and the service map.
type Map struct {
	// Version increases with every change to services, assignments or
	// node states (not with heartbeats).
	Version int64 `json:"version"`
	// Epoch names the store's current life (see Store.EnsureEpoch): "" when
	// nobody has set one since the store was created or emptied.
	Epoch    string             `json:"epoch,omitempty"`
	Nodes    map[string]Node    `json:"nodes"`
	Services map[string]Service `json:"services"`
}

// Store is the shared state.
type Store interface {
	// PutNode creates or updates a node's record (URL, state, class,
	// capacity); it keeps the existing load and heartbeat. It bumps the map
	// version when the record changed.
	PutNode(ctx context.Context, n Node) error
	// Heartbeat records that node id is alive at `at` with load. It fails
	// with ErrNotFound for an unknown node.
	Heartbeat(ctx context.Context, id string, load Load, at time.Time) error
	// Leave records that node id stopped on purpose: its heartbeat is
	// cleared so that it is no longer live; its record and assignments stay.
	Leave(ctx context.Context, id string) error
	// SetNodeState changes a node's state and bumps the map version.
	SetNodeState(ctx context.Context, id string, state NodeState) error
	// RemoveNode deletes a node, unassigns it from every service and bumps
	// the map version. Its registered connections are left for ReapConns.
	RemoveNode(ctx context.Context, id string) error
	// Node returns one node.
	Node(ctx context.Context, id string) (Node, error)

	// PutService creates a service or replaces its default tier, keeping
	// existing assignments; tiers named in tiers are created empty when
	// missing.
	PutService(ctx context.Context, name, defaultTier string, tiers []string) error
	// DeleteService removes a service and its assignments.
	DeleteService(ctx context.Context, name string) error
	// Assign adds node to the service's tier (creating the tier); assigning
	// twice is not an error. The node must exist.
	Assign(ctx context.Context, service, tier, node string) error
	// Unassign removes node from the service's tier; removing what is not
	// there is not an error.
	Unassign(ctx context.Context, service, tier, node string) error
	// SetAssignment atomically replaces the nodes of a service's tier, only
	// if the map version is still ifVersion (0: unconditionally). It
	// returns the new version, or ErrConflict when the version moved.
	SetAssignment(ctx context.Context, service, tier string, nodes []string, ifVersion int64) (int64, error)

	// Map returns a consistent snapshot of nodes and services.
	Map(ctx context.Context) (Map, error)
	// Version returns the current map version (cheap; for polling).
	Version(ctx context.Context) (int64, error)
	// EnsureEpoch returns the store's epoch, a random name set by the first
	// process that asks after the store was created or emptied (a Redis
	// that restarted without its data): a process that sees the epoch
	// change knows the store lost what it held.
	EnsureEpoch(ctx context.Context) (string, error)

	// PutClient creates or replaces a client mapping.
	PutClient(ctx context.Context, c Client) error
	// DeleteClient removes a client mapping.
	DeleteClient(ctx context.Context, id string) error
	// Client returns one client mapping, or ErrNotFound.
	Client(ctx context.Context, id string) (Client, error)
	// Clients lists client mappings in ID order, starting after `after`,
	// at most limit of them.
	Clients(ctx context.Context, after string, limit int) ([]Client, error)

	// AddConns registers connections (a batch, for connect storms).
	AddConns(ctx context.Context, conns []Conn) error
	// RemoveConns unregisters connections by ID; unknown IDs are ignored.
	RemoveConns(ctx context.Context, ids []string) error
	// Conn returns one registered connection, or ErrNotFound.
	Conn(ctx context.Context, id string) (Conn, error)
	// ConnsOfNode lists the connections registered for a node.
	ConnsOfNode(ctx context.Context, node string) ([]Conn, error)
	// ReapConns atomically removes and returns every connection registered
	// for node. When several callers race, each connection is returned to
	// exactly one of them, so that its disconnected event is sent once.
	ReapConns(ctx context.Context, node string) ([]Conn, error)
	// ConnCounts returns the number of registered connections per node.
	ConnCounts(ctx context.Context) (map[string]int, error)

	// AcquireLease takes the named lease for holder for ttl, when it is
	// free or already holder's (then it is extended and keeps its token).
	// It fails with ErrLeaseHeld, naming the current holder, otherwise.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error)
	// RenewLease extends a lease held by l.Holder with l.Token to ttl from
	// now, or fails with ErrLeaseLost.
	RenewLease(ctx context.Context, l Lease, ttl time.Duration) error
	// ReleaseLease gives up a lease; releasing a lease already lost is not
	// an error.
	ReleaseLease(ctx context.Context, l Lease) error
	// LeaseHolder returns the current holder of the named lease, or
	// ErrNotFound when nobody holds it.
	LeaseHolder(ctx context.Context, name string) (Lease, error)
	// ApplyChanges makes changes atomically, and only while l is held
	// (ErrLeaseLost otherwise) and, when ifVersion is not 0, only if the
	// map version is still ifVersion (ErrConflict otherwise). Named
	// services, tiers' nodes and nodes must exist. It bumps the version
	// once when anything changed, and returns the version after.
	ApplyChanges(ctx context.Context, l Lease, ifVersion int64, changes []Change) (int64, error)

	// AddRecord appends rec (JSON) to the named log, keeping its newest
	// keep records.
	AddRecord(ctx context.Context, log string, rec []byte, keep int) error
	// Records returns up to limit records of the named log, newest first.
	Records(ctx context.Context, log string, limit int) ([][]byte, error)

	// Revoke records a revocation (docs/security.md): a device's tokens
	// first issued before NotBefore, or one token by its ID. Recording a
	// device again keeps the later NotBefore (and the later Until); a
	// token ID again, the later Until.
	Revoke(ctx context.Context, r Revocation) error
	// Revocations returns every revocation whose Until is not before now,
	// and forgets the others.
	Revocations(ctx context.Context, now time.Time) ([]Revocation, error)

	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}
