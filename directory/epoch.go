package directory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/store"
)

// reseedLease is how long the directory that re-seeds an empty store holds
// store.LeaseReseed: the others wait that long before trying themselves.
const reseedLease = 10 * time.Second

// resetInfo is what /healthz says about the store's resets.
type resetInfo struct {
	count    int64
	at       time.Time // the last reset seen
	reseeded bool      // the seed was applied after it
}

// adoptEpoch is called by Refresh (under refreshMu) when the map's epoch is
// not the one the directory knew: at its first load, and whenever the store
// lost its data since (a Redis that restarted empty). A map without
// services under a new epoch gets the seed (Deps.Seed), applied by one
// directory at a time; the map to serve is returned. An epoch is adopted
// only once the map is usable: a directory that waits for another to seed
// tries again at its next refresh.
func (s *Server) adoptEpoch(ctx context.Context, m store.Map, now time.Time) (store.Map, error) {
	reset := s.epoch != ""
	if reset && !s.resetSeen {
		s.resetSeen = true
		s.metrics.storeResets.Add(1)
		prev := s.reset.Load()
		s.reset.Store(&resetInfo{count: prev.count + 1, at: now})
		s.log.Warn("the store lost its data (its epoch changed): nodes re-register within a heartbeat", "was", s.epoch, "now", m.Epoch, "services", len(m.Services), "seed", s.seed != nil)
		// The heartbeats went with the data: until the nodes write new
		// ones, judge them by the ones they had.
		if prev := s.snap.Load(); prev != nil {
			s.carry, s.carryUntil = prev.beats, now.Add(s.ttl)
		}
	}
	reseeded := false
	if len(m.Services) == 0 && s.seed != nil {
		_, err := s.st.AcquireLease(ctx, store.LeaseReseed, s.holder, reseedLease)
		if errors.Is(err, store.ErrLeaseHeld) {
			return m, nil // another directory is seeding
		}
		if err != nil {
			return m, fmt.Errorf("reseed: %w", err)
		}
		if err := s.seed.Apply(ctx, s.st); err != nil {
			return m, fmt.Errorf("reseed: %w", err)
		}
		reseeded = true
		s.log.Warn("applied the seed to an empty store", "services", len(s.seed.Services), "nodes", len(s.seed.Nodes))
	}
	e, err := s.st.EnsureEpoch(ctx)
	if err != nil {
		return m, err
	}
	if reseeded {
		if m, err = s.st.Map(ctx); err != nil {
			return m, err
		}
		s.metrics.reseeds.Add(1)
		if s.nc != nil {
			_ = bus.PublishMapChanged(s.nc, s.subj, bus.MapChanged{Version: m.Version, Source: bus.SourceDirectory, Reason: bus.ReasonReseed})
		}
	}
	if reset {
		r := *s.reset.Load()
		r.reseeded = reseeded
		s.reset.Store(&r)
	}
	s.epoch, s.resetSeen = e, false
	return m, nil
}

// newHolder names this directory as a lease holder.
func newHolder() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "directory-" + hex.EncodeToString(b[:])
}

// carryBeats gives the nodes of m that have no heartbeat the one they had
// before the store lost its data, for a dead-after period after that.
func (s *Server) carryBeats(m store.Map, now time.Time) {
	if s.carry == nil {
		return
	}
	if !now.Before(s.carryUntil) {
		s.carry = nil
		return
	}
	for id, n := range m.Nodes {
		if hb, ok := s.carry[id]; ok && n.Heartbeat.IsZero() {
			n.Heartbeat = time.Unix(0, hb)
			m.Nodes[id] = n
		}
	}
}
