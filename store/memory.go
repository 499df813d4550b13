package store

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/tetherhq/tether/protocol"
)

// Memory is a Store held in process memory: the single-binary default. It
// hands out copies only, so callers may keep and change what it returns.
type Memory struct {
	mu        sync.RWMutex
	version   int64
	nodes     map[string]Node
	services  map[string]Service // each Tiers map is owned and changed in place
	clients   map[string]Client
	clientIDs []string                   // sorted keys of clients
	conns     map[string]map[string]Conn // node -> conn ID -> conn
	leases    map[string]memLease
	leaseSeq  map[string]int64
	logs      map[string][][]byte // oldest first
	epoch     string
	revoked   map[string]Revocation // revocationField -> revocation
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{
		nodes:    map[string]Node{},
		services: map[string]Service{},
		clients:  map[string]Client{},
		conns:    map[string]map[string]Conn{},
		leases:   map[string]memLease{},
		leaseSeq: map[string]int64{},
		logs:     map[string][][]byte{},
		revoked:  map[string]Revocation{},
	}
}

// PutNode implements Store.
func (m *Memory) PutNode(ctx context.Context, n Node) error {
	const op = "put node"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkNode(op, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.nodes[n.ID]
	if ok && sameRecord(old, n) {
		return nil
	}
	n.Load, n.Heartbeat = old.Load, old.Heartbeat
	m.nodes[n.ID] = n
	m.version++
	return nil
}

// Heartbeat implements Store.
func (m *Memory) Heartbeat(ctx context.Context, id string, load Load, at time.Time) error {
	return m.beat(ctx, "heartbeat", id, load, at)
}

// Leave implements Store.
func (m *Memory) Leave(ctx context.Context, id string) error {
	return m.beat(ctx, "leave", id, Load{}, time.Time{})
}

func (m *Memory) beat(ctx context.Context, op, id string, load Load, at time.Time) error {
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkName(op, "node id", id); err != nil {
		return err
	}
	if err := checkLoad(op, id, load); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[id]
	if !ok {
		return notFound(op, "node", id)
	}
	n.Load, n.Heartbeat = load, at
	m.nodes[id] = n
	return nil
}

// SetNodeState implements Store.
func (m *Memory) SetNodeState(ctx context.Context, id string, state NodeState) error {
	const op = "set node state"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkName(op, "node id", id); err != nil {
		return err
	}
	if !state.Valid() {
		return invalid(op, "node %s: state %q", id, state)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[id]
	if !ok {
		return notFound(op, "node", id)
	}
	if n.State != state {
		n.State = state
		m.nodes[id] = n
		m.version++
	}
	return nil
}

// RemoveNode implements Store.
func (m *Memory) RemoveNode(ctx context.Context, id string) error {
	const op = "remove node"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkName(op, "node id", id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.nodes[id]; !ok {
		return notFound(op, "node", id)
	}
	delete(m.nodes, id)
	for _, s := range m.services {
		unassignAll(&s, id)
	}
	m.version++
	return nil
}

// Node implements Store.
func (m *Memory) Node(ctx context.Context, id string) (Node, error) {
	const op = "node"
	if err := canceled(ctx, op); err != nil {
		return Node{}, err
	}
	if err := checkName(op, "node id", id); err != nil {
		return Node{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, ok := m.nodes[id]
	if !ok {
		return Node{}, notFound(op, "node", id)
	}
	return n, nil
}

// PutService implements Store.
func (m *Memory) PutService(ctx context.Context, name, defaultTier string, tiers []string) error {
	const op = "put service"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	defaultTier, err := checkService(op, name, defaultTier, tiers)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var cur *Service
	if s, ok := m.services[name]; ok {
		cur = &s
	}
	if s, changed := putService(cur, name, defaultTier, tiers); changed {
		m.services[name] = s
		m.version++
	}
	return nil
}

// DeleteService implements Store.
func (m *Memory) DeleteService(ctx context.Context, name string) error {
	const op = "delete service"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkName(op, "service", name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.services[name]; !ok {
		return notFound(op, "service", name)
	}
	delete(m.services, name)
	m.version++
	return nil
}

// Assign implements Store.
func (m *Memory) Assign(ctx context.Context, service, tier, node string) error {
	const op = "assign"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkNames(op, "service/tier/node", service, tier, node); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.services[service]
	if !ok {
		return notFound(op, "service", service)
	}
	if _, ok := m.nodes[node]; !ok {
		return notFound(op, "node", node)
	}
	if assign(&s, tier, node) {
		m.version++
	}
	return nil
}

// Unassign implements Store.
func (m *Memory) Unassign(ctx context.Context, service, tier, node string) error {
	const op = "unassign"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkNames(op, "service/tier/node", service, tier, node); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.services[service]; ok && unassign(&s, tier, node) {
		m.version++
	}
	return nil
}

// SetAssignment implements Store.
func (m *Memory) SetAssignment(ctx context.Context, service, tier string, nodes []string, ifVersion int64) (int64, error) {
	const op = "set assignment"
	if err := canceled(ctx, op); err != nil {
		return 0, err
	}
	if err := checkAssignment(op, service, tier, nodes, ifVersion); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ifVersion != 0 && ifVersion != m.version {
		return 0, conflict(op, ifVersion, m.version)
	}
	s, ok := m.services[service]
	if !ok {
		return 0, notFound(op, "service", service)
	}
	for _, n := range nodes {
		if _, ok := m.nodes[n]; !ok {
			return 0, notFound(op, "node", n)
		}
	}
	if setTier(&s, tier, nodes) {
		m.version++
	}
	return m.version, nil
}

// Map implements Store.
func (m *Memory) Map(ctx context.Context) (Map, error) {
	if err := canceled(ctx, "map"); err != nil {
		return Map{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	mp := Map{
		Version:  m.version,
		Epoch:    m.epoch,
		Nodes:    maps.Clone(m.nodes),
		Services: make(map[string]Service, len(m.services)),
	}
	for name, s := range m.services {
		mp.Services[name] = cloneService(s)
	}
	return mp, nil
}

// EnsureEpoch implements Store.
func (m *Memory) EnsureEpoch(ctx context.Context) (string, error) {
	if err := canceled(ctx, "ensure epoch"); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.epoch == "" {
		m.epoch = newEpoch()
	}
	return m.epoch, nil
}

// Version implements Store.
func (m *Memory) Version(ctx context.Context) (int64, error) {
	if err := canceled(ctx, "version"); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.version, nil
}

// PutClient implements Store.
func (m *Memory) PutClient(ctx context.Context, c Client) error {
	const op = "put client"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkClient(op, c); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.clients[c.ID]; !ok {
		i, _ := slices.BinarySearch(m.clientIDs, c.ID)
		m.clientIDs = slices.Insert(m.clientIDs, i, c.ID)
	}
	m.clients[c.ID] = c
	return nil
}

// DeleteClient implements Store.
func (m *Memory) DeleteClient(ctx context.Context, id string) error {
	const op = "delete client"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkName(op, "client id", id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.clients[id]; !ok {
		return notFound(op, "client", id)
	}
	delete(m.clients, id)
	i, _ := slices.BinarySearch(m.clientIDs, id)
	m.clientIDs = slices.Delete(m.clientIDs, i, i+1)
	return nil
}

// Client implements Store.
func (m *Memory) Client(ctx context.Context, id string) (Client, error) {
	const op = "client"
	if err := canceled(ctx, op); err != nil {
		return Client{}, err
	}
	if err := checkName(op, "client id", id); err != nil {
		return Client{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.clients[id]
	if !ok {
		return Client{}, notFound(op, "client", id)
	}
	return c, nil
}

// Clients implements Store.
func (m *Memory) Clients(ctx context.Context, after string, limit int) ([]Client, error) {
	const op = "clients"
	if err := canceled(ctx, op); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, invalid(op, "limit %d", limit)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	i, found := slices.BinarySearch(m.clientIDs, after)
	if found {
		i++
	}
	ids := m.clientIDs[i:min(i+limit, len(m.clientIDs))]
	out := make([]Client, len(ids))
	for j, id := range ids {
		out[j] = m.clients[id]
	}
	return out, nil
}

// AddConns implements Store.
func (m *Memory) AddConns(ctx context.Context, conns []Conn) error {
	const op = "add conns"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	conns, err := checkConns(op, conns)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range conns {
		byID := m.conns[c.Node]
		if byID == nil {
			byID = map[string]Conn{}
			m.conns[c.Node] = byID
		}
		byID[c.ID] = c
	}
	return nil
}

// RemoveConns implements Store.
func (m *Memory) RemoveConns(ctx context.Context, ids []string) error {
	const op = "remove conns"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	for _, id := range ids {
		if err := checkConnID(op, id); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		node := protocol.ConnNode(id)
		delete(m.conns[node], id)
		if len(m.conns[node]) == 0 {
			delete(m.conns, node)
		}
	}
	return nil
}

// Conn implements Store.
func (m *Memory) Conn(ctx context.Context, id string) (Conn, error) {
	const op = "conn"
	if err := canceled(ctx, op); err != nil {
		return Conn{}, err
	}
	if err := checkConnID(op, id); err != nil {
		return Conn{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.conns[protocol.ConnNode(id)][id]
	if !ok {
		return Conn{}, notFound(op, "conn", id)
	}
	return c, nil
}

// ConnsOfNode implements Store. The connections are in ID order.
func (m *Memory) ConnsOfNode(ctx context.Context, node string) ([]Conn, error) {
	const op = "conns of node"
	if err := canceled(ctx, op); err != nil {
		return nil, err
	}
	if err := checkName(op, "node id", node); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return sortConns(slices.Collect(maps.Values(m.conns[node]))), nil
}

// ReapConns implements Store. The connections are in ID order.
func (m *Memory) ReapConns(ctx context.Context, node string) ([]Conn, error) {
	const op = "reap conns"
	if err := canceled(ctx, op); err != nil {
		return nil, err
	}
	if err := checkName(op, "node id", node); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	conns := slices.Collect(maps.Values(m.conns[node]))
	delete(m.conns, node)
	return sortConns(conns), nil
}

// ConnCounts implements Store. Nodes without connections are left out.
func (m *Memory) ConnCounts(ctx context.Context) (map[string]int, error) {
	if err := canceled(ctx, "conn counts"); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	counts := make(map[string]int, len(m.conns))
	for node, byID := range m.conns {
		counts[node] = len(byID)
	}
	return counts, nil
}

// Ping implements Store; a Memory store is always reachable.
func (m *Memory) Ping(ctx context.Context) error { return canceled(ctx, "ping") }

// Close implements Store; it does nothing.
func (m *Memory) Close() error { return nil }

func sortConns(conns []Conn) []Conn {
	slices.SortFunc(conns, func(a, b Conn) int { return cmp.Compare(a.ID, b.ID) })
	return conns
}
