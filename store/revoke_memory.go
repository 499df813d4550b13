package store

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// Revoke implements Store.
func (m *Memory) Revoke(ctx context.Context, r Revocation) error {
	const op = "revoke"
	if err := canceled(ctx, op); err != nil {
		return err
	}
	if err := checkRevocation(op, r); err != nil {
		return err
	}
	r.NotBefore, r.Until = r.NotBefore.UTC(), r.Until.UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	f := revocationField(r)
	if old, ok := m.revoked[f]; ok {
		r = mergeRevocation(old, r)
	}
	m.revoked[f] = r
	return nil
}

// Revocations implements Store.
func (m *Memory) Revocations(ctx context.Context, now time.Time) ([]Revocation, error) {
	const op = "revocations"
	if err := canceled(ctx, op); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Revocation, 0, len(m.revoked))
	for f, r := range m.revoked {
		if r.Until.Before(now) {
			delete(m.revoked, f)
			continue
		}
		out = append(out, r)
	}
	sortRevocations(out)
	return out, nil
}

// sortRevocations orders revocations by service, then device revocations
// by device, then token revocations by ID.
func sortRevocations(rs []Revocation) {
	slices.SortFunc(rs, func(a, b Revocation) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(revocationField(a), revocationField(b)))
	})
}
