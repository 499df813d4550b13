package directory

import (
	"fmt"
	"net/http"
	"sync/atomic"
)

// metrics are the directory's counters, exposed in the Prometheus text
// format on /metrics.
type metrics struct {
	answers       [6]atomic.Uint64 // by status class: index status/100
	notModified   atomic.Uint64
	unavailable   atomic.Uint64
	refreshes     atomic.Uint64
	refreshErrors atomic.Uint64
	negotiated    atomic.Uint64
	storeResets   atomic.Uint64
	reseeds       atomic.Uint64
}

// count records one lookup answer.
func (m *metrics) count(status int) {
	switch {
	case status == http.StatusNotModified:
		m.notModified.Add(1)
	case status == http.StatusServiceUnavailable:
		m.unavailable.Add(1)
	}
	if c := status / 100; c >= 0 && c < len(m.answers) {
		m.answers[c].Add(1)
	}
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	m := &s.metrics
	sn, hl := s.snap.Load(), s.health.Load()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("# HELP tether_directory_lookups_total Lookup and map answers by status class.")
	p("# TYPE tether_directory_lookups_total counter")
	for c := 2; c < len(m.answers); c++ {
		p(`tether_directory_lookups_total{class="%dxx"} %d`, c, m.answers[c].Load())
	}
	p("# HELP tether_directory_not_modified_total Lookups answered 304.")
	p("# TYPE tether_directory_not_modified_total counter")
	p("tether_directory_not_modified_total %d", m.notModified.Load())
	p("# HELP tether_directory_unavailable_total Lookups answered 503 (no live node, store down, not ready).")
	p("# TYPE tether_directory_unavailable_total counter")
	p("tether_directory_unavailable_total %d", m.unavailable.Load())
	p("# HELP tether_directory_refreshes_total Map reloads from the store.")
	p("# TYPE tether_directory_refreshes_total counter")
	p("tether_directory_refreshes_total %d", m.refreshes.Load())
	p("# HELP tether_directory_refresh_errors_total Failed map reloads.")
	p("# TYPE tether_directory_refresh_errors_total counter")
	p("tether_directory_refresh_errors_total %d", m.refreshErrors.Load())
	p("# HELP tether_directory_reaped_connections_total Connections of dead nodes reaped by this directory.")
	p("# TYPE tether_directory_reaped_connections_total counter")
	p("tether_directory_reaped_connections_total %d", s.reaper.Reaped())
	p("# HELP tether_directory_reap_errors_total Failed attempts to reap dead nodes' connections.")
	p("# TYPE tether_directory_reap_errors_total counter")
	p("tether_directory_reap_errors_total %d", s.reaper.Failures())
	p("# HELP tether_directory_negotiations_total Tokens issued by /v1/negotiate.")
	p("# TYPE tether_directory_negotiations_total counter")
	p("tether_directory_negotiations_total %d", m.negotiated.Load())
	p("# HELP tether_directory_store_resets_total Times the store was found to have lost its data (its epoch changed).")
	p("# TYPE tether_directory_store_resets_total counter")
	p("tether_directory_store_resets_total %d", m.storeResets.Load())
	p("# HELP tether_directory_reseeds_total Times this directory applied the seed to an empty store.")
	p("# TYPE tether_directory_reseeds_total counter")
	p("tether_directory_reseeds_total %d", m.reseeds.Load())
	stale, version, live := 0, int64(0), 0
	if !hl.storeOK {
		stale = 1
	}
	if sn != nil {
		version, live = sn.version, sn.live
	}
	p("# HELP tether_directory_stale 1 while the store is unavailable and answers come from a stale map.")
	p("# TYPE tether_directory_stale gauge")
	p("tether_directory_stale %d", stale)
	p("# HELP tether_directory_map_version Version of the served map.")
	p("# TYPE tether_directory_map_version gauge")
	p("tether_directory_map_version %d", version)
	p("# HELP tether_directory_live_nodes Nodes listed (live and active) in the served map.")
	p("# TYPE tether_directory_live_nodes gauge")
	p("tether_directory_live_nodes %d", live)
	p("# HELP tether_directory_client_cache_entries Client mappings cached.")
	p("# TYPE tether_directory_client_cache_entries gauge")
	p("tether_directory_client_cache_entries %d", s.clients.n.Load())
}
