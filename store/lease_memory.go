package store

import (
	"context"
	"fmt"
	"slices"
	"time"
)

type memLease struct {
	holder  string
	token   int64
	expires time.Time
}

// AcquireLease implements Store.
func (m *Memory) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	const op = "acquire lease"
	if err := canceled(ctx, op); err != nil {
		return Lease{}, err
	}
	if err := checkLease(op, name, holder, 0, false); err != nil {
		return Lease{}, err
	}
	if err := checkTTL(op, ttl); err != nil {
		return Lease{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if l, ok := m.leases[name]; ok && now.Before(l.expires) {
		if l.holder != holder {
			return Lease{}, fmt.Errorf("store: %s %s: %w: %s", op, name, ErrLeaseHeld, l.holder)
		}
		l.expires = now.Add(ttl)
		m.leases[name] = l
		return Lease{Name: name, Holder: holder, Token: l.token}, nil
	}
	m.leaseSeq[name]++
	l := memLease{holder: holder, token: m.leaseSeq[name], expires: now.Add(ttl)}
	m.leases[name] = l
	return Lease{Name: name, Holder: holder, Token: l.token}, nil
}

// held reports whether l is held right now. m.mu held.
func (m *Memory) held(l Lease) bool {
	cur, ok := m.leases[l.Name]
	return ok && cur.holder == l.Holder && cur.token == l.Token && time.Now().Before(cur.expires)
}

// RenewLease implements Store.
func (m *Memory) RenewLease(ctx context.Context, l Lease, ttl time.Duration) error {
	const op = "renew lease"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkLease(op, l.Name, l.Holder, l.Token, true); err != nil {
		return err
	}
	if err := checkTTL(op, ttl); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.held(l) {
		return fmt.Errorf("store: %s %s: %w", op, l.Name, ErrLeaseLost)
	}
	cur := m.leases[l.Name]
	cur.expires = time.Now().Add(ttl)
	m.leases[l.Name] = cur
	return nil
}

// ReleaseLease implements Store.
func (m *Memory) ReleaseLease(ctx context.Context, l Lease) error {
	const op = "release lease"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkLease(op, l.Name, l.Holder, l.Token, true); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held(l) {
		delete(m.leases, l.Name)
	}
	return nil
}

// LeaseHolder implements Store.
func (m *Memory) LeaseHolder(ctx context.Context, name string) (Lease, error) {
	const op = "lease holder"
	if err := canceled(ctx, op); err != nil {
		return Lease{}, err
	}
	if err := checkName(op, "lease name", name); err != nil {
		return Lease{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	l, ok := m.leases[name]
	if !ok || !time.Now().Before(l.expires) {
		return Lease{}, notFound(op, "lease", name)
	}
	return Lease{Name: name, Holder: l.holder, Token: l.token}, nil
}

// ApplyChanges implements Store.
func (m *Memory) ApplyChanges(ctx context.Context, l Lease, ifVersion int64, changes []Change) (int64, error) {
	const op = "apply changes"
	if err := canceled(ctx, op); err != nil {
		return 0, err
	}
	if err := checkLease(op, l.Name, l.Holder, l.Token, true); err != nil {
		return 0, err
	}
	if err := checkChanges(op, ifVersion, changes); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.held(l) {
		return 0, fmt.Errorf("store: %s: %s: %w", op, l.Name, ErrLeaseLost)
	}
	if ifVersion != 0 && ifVersion != m.version {
		return 0, conflict(op, ifVersion, m.version)
	}
	// Check everything first: all or nothing.
	for _, c := range changes {
		if c.Node != "" {
			if _, ok := m.nodes[c.Node]; !ok {
				return 0, notFound(op, "node", c.Node)
			}
			continue
		}
		if _, ok := m.services[c.Service]; !ok {
			return 0, notFound(op, "service", c.Service)
		}
		for _, n := range c.Nodes {
			if _, ok := m.nodes[n]; !ok {
				return 0, notFound(op, "node", n)
			}
		}
	}
	changed := false
	for _, c := range changes {
		if c.Node != "" {
			n := m.nodes[c.Node]
			if n.State != c.State {
				n.State = c.State
				m.nodes[c.Node] = n
				changed = true
			}
			continue
		}
		s := m.services[c.Service]
		if setTier(&s, c.Tier, c.Nodes) {
			changed = true
		}
	}
	if changed {
		m.version++
	}
	return m.version, nil
}

// AddRecord implements Store.
func (m *Memory) AddRecord(ctx context.Context, log string, rec []byte, keep int) error {
	const op = "add record"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkLog(op, log, keep); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := append(m.logs[log], slices.Clone(rec))
	if len(l) > keep {
		l = slices.Delete(l, 0, len(l)-keep)
	}
	m.logs[log] = l
	return nil
}

// Records implements Store.
func (m *Memory) Records(ctx context.Context, log string, limit int) ([][]byte, error) {
	const op = "records"
	if err := canceled(ctx, op); err != nil {
		return nil, err
	}
	if err := checkLog(op, log, limit); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	l := m.logs[log]
	out := make([][]byte, 0, min(limit, len(l)))
	for i := len(l) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, slices.Clone(l[i]))
	}
	return out, nil
}
