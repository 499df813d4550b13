package balancer

import (
	"sync"
	"time"

	"github.com/tetherhq/tether/bus"
)

// Pool is one service's tier: the unit the balancer gives nodes to.
type Pool struct {
	Service, Tier string
}

func (p Pool) String() string { return p.Service + "/" + p.Tier }

// Figures are what the balancer knows of one node, from the stats it
// published over the window.
type Figures struct {
	Node string
	// Last is when the node's latest stats arrived.
	Last time.Time
	// Connections is the node's connection count, and Pools those of each
	// service and tier (as its latest stats said). Connections whose token
	// has no tier count in the tier "" of their service.
	Connections int
	Pools       map[Pool]int
	// PushRate and ByteRate are pushes and payload bytes per second by
	// service, averaged over the window.
	PushRate, ByteRate map[string]float64
	// Load is the node's load averaged over the window; LagMS and Queued
	// are the largest event-loop lag and dispatch queue it reported.
	Load   float64
	LagMS  float64
	Queued int
}

// window keeps the stats of every node over the last Window. It is safe
// for concurrent use: stats arrive on NATS's goroutine, rounds read it.
type window struct {
	span time.Duration

	mu    sync.Mutex
	nodes map[string][]sample
}

type sample struct {
	at time.Time // when it arrived
	st bus.NodeStats
}

func newWindow(span time.Duration) *window {
	return &window{span: span, nodes: map[string][]sample{}}
}

// add records stats that arrived at `at`.
func (w *window) add(at time.Time, st bus.NodeStats) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := append(w.nodes[st.Node], sample{at: at, st: st})
	w.nodes[st.Node] = prune(s, at.Add(-w.span))
}

// prune drops the samples older than from, keeping the latest.
func prune(s []sample, from time.Time) []sample {
	i := 0
	for i < len(s)-1 && s[i].at.Before(from) {
		i++
	}
	if i == 0 {
		return s
	}
	return append(s[:0], s[i:]...)
}

// figures returns every node's figures at now.
func (w *window) figures(now time.Time) map[string]*Figures {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]*Figures, len(w.nodes))
	from := now.Add(-w.span)
	for id, s := range w.nodes {
		s = prune(s, from)
		w.nodes[id] = s
		if len(s) == 0 {
			continue
		}
		out[id] = summarize(id, s)
	}
	return out
}

// summarize turns a node's samples into Figures.
func summarize(id string, s []sample) *Figures {
	last := s[len(s)-1]
	f := &Figures{
		Node: id, Last: last.at, Connections: last.st.Connections, Pools: map[Pool]int{},
		PushRate: map[string]float64{}, ByteRate: map[string]float64{},
	}
	for svc, ss := range last.st.Services {
		for tier, k := range ss.Connections {
			if k > 0 {
				f.Pools[Pool{svc, tier}] = k
			}
		}
	}
	var secs, load float64
	pushes, bytes := map[string]int64{}, map[string]int64{}
	for _, x := range s {
		secs += float64(x.st.IntervalMS) / 1000
		load += x.st.CPU
		f.LagMS = max(f.LagMS, x.st.LagMS)
		f.Queued = max(f.Queued, x.st.Queued)
		for svc, ss := range x.st.Services {
			pushes[svc] += ss.Pushes
			bytes[svc] += ss.Bytes
		}
	}
	f.Load = load / float64(len(s))
	if secs > 0 {
		for svc, k := range pushes {
			f.PushRate[svc] = float64(k) / secs
		}
		for svc, k := range bytes {
			f.ByteRate[svc] = float64(k) / secs
		}
	}
	return f
}

// forget drops a node's history (it left the map).
func (w *window) forget(id string) {
	w.mu.Lock()
	delete(w.nodes, id)
	w.mu.Unlock()
}
