package membership

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/store"
)

// ReapStore is what a Reaper needs of a Store.
type ReapStore interface {
	Map(ctx context.Context) (store.Map, error)
	ConnCounts(ctx context.Context) (map[string]int, error)
	ReapConns(ctx context.Context, node string) ([]store.Conn, error)
}

// Reaper removes the registered connections of dead nodes and announces
// each as disconnected (reason node_lost), so that apps learn of devices
// whose node died without a goodbye. Every live node (through its Member)
// and every directory runs one: store.ReapConns hands each connection to
// exactly one of them, so each disconnected event is sent once, and
// connections are reaped even when every node died.
//
// A Reaper is not safe for concurrent use: give each loop its own.
type Reaper struct {
	// Store is where nodes heartbeat and connections are registered.
	Store ReapStore
	// NATS and Subjects publish the disconnected events; without NATS,
	// connections are reaped silently.
	NATS     *nats.Conn
	Subjects bus.Subjects
	// TTL is how old a heartbeat may be before its node is dead
	// (store.DeadAfter of the heartbeat interval).
	TTL time.Duration
	// Self is a node ID never to reap (the caller's own).
	Self string
	// Log receives what was reaped. Default: discard.
	Log *slog.Logger

	absent map[string]bool
	// healthySince is when the store last came back (or the first call):
	// heartbeats written while it was unreachable were lost, so no node
	// is judged dead before the store has been reachable for a whole TTL.
	healthySince time.Time
	// epoch is the store's epoch at the last read: a new one means the
	// store lost its data, heartbeats with it.
	epoch string

	reaped, failures atomic.Uint64
}

// StoreFailed tells the Reaper that its owner could not reach the store
// (a failed heartbeat, say): the store must then be reachable for a whole
// TTL again before any node is judged dead.
func (r *Reaper) StoreFailed() { r.healthySince = time.Time{} }

// Reaped and Failures count the connections reaped and the rounds that
// failed, for metrics.
func (r *Reaper) Reaped() uint64   { return r.reaped.Load() }
func (r *Reaper) Failures() uint64 { return r.failures.Load() }

// Run reaps every `every` until ctx ends.
func (r *Reaper) Run(ctx context.Context, every, storeTimeout time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// The time of the round, not of the tick: a tick can wait
			// while a round hangs on the store.
			rctx, cancel := context.WithTimeout(ctx, storeTimeout)
			_, _ = r.Reap(rctx, time.Now())
			cancel()
		}
	}
}

// Reap finds the nodes dead at now, reaps their connections and announces
// them. A node is dead when its heartbeat is older than TTL (or was cleared
// by Leave), or when it was removed from the map but still has connections
// registered on two calls in a row (so that a running node whose record an
// operator just removed has a heartbeat's time to put it back). Nobody is
// judged dead until the store has been readable, under one epoch and
// without a read that hung for over a quarter of the TTL, for a whole TTL. It returns
// the reaped connections by node; on error, what it reaped so far.
func (r *Reaper) Reap(ctx context.Context, now time.Time) (map[string][]store.Conn, error) {
	lost, err := r.reap(ctx, now)
	if err != nil {
		r.failures.Add(1)
		r.log().Warn("reaping dead nodes failed", "err", err)
	}
	for id, conns := range lost {
		r.log().Warn("node lost; its connections are gone", "lost_node", id, "connections", len(conns))
		r.announce(conns, now)
		r.reaped.Add(uint64(len(conns)))
	}
	return lost, err
}

func (r *Reaper) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func (r *Reaper) reap(ctx context.Context, now time.Time) (map[string][]store.Conn, error) {
	began := time.Now()
	m, err := r.Store.Map(ctx)
	if err != nil {
		r.healthySince = time.Time{}
		return nil, err
	}
	if took := time.Since(began); took > r.TTL/4 {
		// The read hung (a frozen or failing-over store) and then
		// answered: heartbeats could not be written meanwhile, so the
		// store is back only from the end of the read.
		r.healthySince = now.Add(took)
	}
	if m.Epoch != r.epoch {
		// The store lost its data (or is new to this Reaper): every
		// heartbeat went with it.
		r.epoch, r.healthySince = m.Epoch, time.Time{}
	}
	if r.healthySince.IsZero() {
		r.healthySince = now
	}
	if now.Sub(r.healthySince) < r.TTL {
		// Just started, or the store just came back: nodes may not have
		// been able to heartbeat; give them a TTL to do so.
		return nil, nil
	}
	var dead []string
	for id, n := range m.Nodes {
		if id != r.Self && !n.Live(now, r.TTL) {
			dead = append(dead, id)
		}
	}
	if counts, err := r.Store.ConnCounts(ctx); err == nil {
		absent := map[string]bool{}
		for id, c := range counts {
			if _, ok := m.Nodes[id]; ok || c == 0 || id == r.Self {
				continue
			}
			if r.absent[id] {
				dead = append(dead, id)
			} else {
				absent[id] = true
			}
		}
		r.absent = absent
	}
	out := map[string][]store.Conn{}
	for _, id := range dead {
		lost, err := r.Store.ReapConns(ctx, id)
		if err != nil {
			return out, fmt.Errorf("membership: reap %s: %w", id, err)
		}
		if len(lost) > 0 {
			out[id] = lost
		}
	}
	return out, nil
}

// announce publishes a disconnected event (reason node_lost) for each
// connection.
func (r *Reaper) announce(conns []store.Conn, now time.Time) {
	if r.NATS == nil {
		return
	}
	for _, c := range conns {
		ev := bus.LostEvent(c.Service, c.Device, c.ID, c.Node, c.Tier, now, c.Since)
		if err := bus.PublishEvent(r.NATS, r.Subjects, ev); err != nil {
			r.log().Warn("publish disconnected event failed", "conn", c.ID, "err", err)
		}
	}
}
