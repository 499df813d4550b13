package directory

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Lookup forms (the form label of tether_directory_requests_total).
const (
	formService       = iota // GET /v1/nodes?service=S
	formClient               // ?client=C
	formServiceClient        // ?service=S&client=C
	formMap                  // GET /v1/map
	formNegotiate            // POST /v1/negotiate, its 503s
	formInvalid              // a /v1/nodes query that does not parse (400)
	numForms
)

var formNames = [numForms]string{"service", "client", "service_client", "map", "negotiate", "invalid"}

// Statuses counted per form; any other counts as "other".
var statusCodes = [...]int{200, 304, 400, 404, 409, 503}

func lookupForm(service, client string) int {
	switch {
	case service != "" && client != "":
		return formServiceClient
	case client != "":
		return formClient
	}
	return formService
}

// metrics are the directory's counters, exposed in the Prometheus text
// format on /metrics. Counting an answer is two atomic adds.
type metrics struct {
	answers       [6]atomic.Uint64 // by status class: index status/100
	byForm        [numForms][len(statusCodes) + 1]atomic.Uint64
	notModified   atomic.Uint64
	unavailable   atomic.Uint64
	refreshes     atomic.Uint64
	refreshErrors atomic.Uint64
	negotiated    atomic.Uint64
	storeResets   atomic.Uint64
	reseeds       atomic.Uint64
	refused       atomic.Uint64 // refreshes refused: revoked, past max_token_lifetime
}

// count records one lookup answer.
func (m *metrics) count(form, status int) {
	switch {
	case status == http.StatusNotModified:
		m.notModified.Add(1)
	case status == http.StatusServiceUnavailable:
		m.unavailable.Add(1)
	}
	if c := status / 100; c >= 0 && c < len(m.answers) {
		m.answers[c].Add(1)
	}
	i := len(statusCodes)
	for k, code := range statusCodes {
		if code == status {
			i = k
			break
		}
	}
	m.byForm[form][i].Add(1)
}

// collector exports the directory's counters; it reads them at scrape time.
type collector struct {
	s                                                         *Server
	lookups, requests                                         *prometheus.Desc
	notModified, unavailable, refreshes, refreshErrors        *prometheus.Desc
	reaped, reapErrors, negotiations, storeResets, reseeds    *prometheus.Desc
	stale, mapVersion, liveNodes, cacheEntries, nodes, served *prometheus.Desc
	// Security (docs/security.md).
	refreshRefused, authFailures, lockouts, rateLimited, revocations *prometheus.Desc
}

func newCollector(s *Server) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tether_directory_"+name, help, labels, nil)
	}
	return &collector{
		s:              s,
		lookups:        d("lookups_total", "Lookup and map answers by status class.", "class"),
		requests:       d("requests_total", "Lookup, map and negotiate answers by form (service, client, service_client, map, negotiate, invalid) and HTTP status.", "form", "status"),
		notModified:    d("not_modified_total", "Lookups answered 304."),
		unavailable:    d("unavailable_total", "Lookups answered 503 (no live node, store down, not ready)."),
		refreshes:      d("refreshes_total", "Map reloads from the store."),
		refreshErrors:  d("refresh_errors_total", "Failed map reloads."),
		reaped:         d("reaped_connections_total", "Connections of dead nodes reaped by this directory."),
		reapErrors:     d("reap_errors_total", "Failed attempts to reap dead nodes' connections."),
		negotiations:   d("negotiations_total", "Tokens issued by /v1/negotiate."),
		refreshRefused: d("refresh_refused_total", "Token refreshes refused: revoked, or past max_token_lifetime."),
		authFailures:   d("auth_failures_total", "Failed authentications: wrong admin token, wrong registration secret, invalid device token."),
		lockouts:       d("lockouts_total", "Addresses locked out after too many failed authentications."),
		rateLimited:    d("rate_limited_total", "Requests answered 429 (negotiate rate, lockouts)."),
		revocations:    d("revocations", "Revocations in force known to this directory."),
		storeResets:    d("store_resets_total", "Times the store was found to have lost its data (its epoch changed)."),
		reseeds:        d("reseeds_total", "Times this directory applied the seed to an empty store."),
		stale:          d("stale", "1 while the store is unavailable and answers come from a stale map."),
		mapVersion:     d("map_version", "Version of the served map."),
		liveNodes:      d("live_nodes", "Nodes listed (live and active) in the served map."),
		cacheEntries:   d("client_cache_entries", "Client mappings cached."),
		nodes:          d("nodes", "Nodes in the served map."),
		served:         d("services", "Services in the served map."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lookups, c.requests, c.notModified, c.unavailable, c.refreshes, c.refreshErrors,
		c.reaped, c.reapErrors, c.negotiations, c.refreshRefused, c.authFailures, c.lockouts, c.rateLimited, c.revocations, c.storeResets, c.reseeds, c.stale, c.mapVersion, c.liveNodes, c.cacheEntries, c.nodes, c.served} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	m := &s.metrics
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	for k := 2; k < len(m.answers); k++ {
		counter(c.lookups, m.answers[k].Load(), strconv.Itoa(k)+"xx")
	}
	for f := range m.byForm {
		for i := range m.byForm[f] {
			status := "other"
			if i < len(statusCodes) {
				status = strconv.Itoa(statusCodes[i])
			}
			counter(c.requests, m.byForm[f][i].Load(), formNames[f], status)
		}
	}
	counter(c.notModified, m.notModified.Load())
	counter(c.unavailable, m.unavailable.Load())
	counter(c.refreshes, m.refreshes.Load())
	counter(c.refreshErrors, m.refreshErrors.Load())
	counter(c.reaped, uint64(s.reaper.Reaped()))
	counter(c.reapErrors, uint64(s.reaper.Failures()))
	counter(c.negotiations, m.negotiated.Load())
	counter(c.refreshRefused, m.refused.Load())
	counter(c.authFailures, s.lim.failures.Load())
	counter(c.lockouts, s.lim.lockouts.Load())
	counter(c.rateLimited, s.lim.limited.Load())
	gauge(c.revocations, float64(s.revoked.Len()))
	counter(c.storeResets, m.storeResets.Load())
	counter(c.reseeds, m.reseeds.Load())
	sn, hl := s.snap.Load(), s.health.Load()
	stale := 0.0
	if !hl.storeOK {
		stale = 1
	}
	gauge(c.stale, stale)
	var version, live, nodes, services float64
	if sn != nil {
		version, live, nodes, services = float64(sn.version), float64(sn.live), float64(sn.nodes), float64(len(sn.services))
	}
	gauge(c.mapVersion, version)
	gauge(c.liveNodes, live)
	gauge(c.nodes, nodes)
	gauge(c.served, services)
	gauge(c.cacheEntries, float64(s.clients.n.Load()))
}
