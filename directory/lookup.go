package directory

import (
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tetherhq/tether/protocol"
)

// What a listener serves (routes).
const (
	servePublic = 1 << iota // lookups, negotiate, /healthz
	serveAdmin              // the admin API, /metrics, /ui/, /healthz
	serveAll    = servePublic | serveAdmin
)

// routes builds the handler of a listener serving what. Every path answers
// wrong methods with a JSON 405 and an Allow header, and unknown paths with
// a JSON 404.
func (s *Server) routes(what int) http.Handler {
	mux := http.NewServeMux()
	if what&servePublic != 0 {
		handle(mux, "/v1/nodes", methods{http.MethodGet: cors(s.handleNodes), http.MethodOptions: preflight})
		handle(mux, "/v1/map", methods{http.MethodGet: cors(s.handleMap), http.MethodOptions: preflight})
		handle(mux, "/v1/negotiate", methods{http.MethodPost: s.handleNegotiate})
	}
	handle(mux, "/healthz", methods{http.MethodGet: s.handleHealth})
	if what&serveAdmin != 0 {
		metricsHandler := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)})
		handle(mux, "/metrics", methods{http.MethodGet: metricsHandler.ServeHTTP})
		if s.ui != nil {
			mux.Handle("/ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
			mux.Handle("/ui/", http.StripPrefix("/ui", s.ui))
		}
		mux.Handle("/v1/admin/", s.adminRoutes())
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		errorf(w, http.StatusNotFound, CodeNotFound, "no such path: "+r.URL.Path)
	})
	return mux
}

// methods maps HTTP methods to handlers; GET also serves HEAD.
type methods map[string]http.HandlerFunc

func handle(mux *http.ServeMux, pattern string, ms methods) {
	var allow string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions} {
		if ms[m] != nil {
			if allow != "" {
				allow += ", "
			}
			allow += m
			if m == http.MethodGet {
				allow += ", HEAD"
			}
		}
	}
	allowHdr := []string{allow}
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		h := ms[r.Method]
		if h == nil && r.Method == http.MethodHead {
			h = ms[http.MethodGet]
		}
		if h == nil {
			w.Header()["Allow"] = allowHdr
			errorf(w, http.StatusMethodNotAllowed, CodeMethod, r.Method+" is not allowed on "+r.URL.Path+"; use "+allow)
			return
		}
		h(w, r)
	})
}

// The lookups are public (what any device may ask), so pages of any
// origin may read them: a browser device asks the directory itself.
var (
	hdrAnyOrigin   = []string{"*"}
	hdrExposed     = []string{"ETag, Cache-Control, Retry-After, Warning, X-Tether-Stale, X-Tether-Stale-Since"}
	hdrCORSMethods = []string{"GET, HEAD"}
	hdrCORSHeaders = []string{"If-None-Match"}
	hdrCORSMaxAge  = []string{"600"}
)

// cors lets pages of any origin read h's answers.
func cors(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") != "" {
			w.Header()["Access-Control-Allow-Origin"] = hdrAnyOrigin
			w.Header()["Access-Control-Expose-Headers"] = hdrExposed
		}
		h(w, r)
	}
}

// preflight answers a CORS preflight of a lookup.
func preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Access-Control-Allow-Origin"] = hdrAnyOrigin
	h["Access-Control-Allow-Methods"] = hdrCORSMethods
	h["Access-Control-Allow-Headers"] = hdrCORSHeaders
	h["Access-Control-Max-Age"] = hdrCORSMaxAge
	w.WriteHeader(http.StatusNoContent)
}

// bufPool holds answer buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// lookupHeaders sets the headers every lookup answer carries: caching, and
// the stale marker while the store is down.
func (s *Server) lookupHeaders(h http.Header, hl *health, fromCache bool) {
	h["Cache-Control"] = s.maxAge
	if !hl.storeOK || fromCache {
		if hl.staleHdr != nil {
			h["X-Tether-Stale"] = hl.staleHdr
			h["X-Tether-Stale-Since"] = hl.sinceHdr
			h["Warning"] = hl.warnHdr
		} else {
			h["X-Tether-Stale"] = []string{"true"}
		}
	}
}

// asOf is the time liveness is judged at. Heartbeats stop reaching a store
// that does not answer, so their age then says nothing about the nodes, and
// judging by the clock would empty every list a few seconds into an outage.
// So liveness is judged at:
//
//   - while the store is known to be down, when the map was last read;
//   - while it has not been read for longer than a refresh interval and a
//     margin (a refresh is hanging: the outage is not known yet), no later
//     than that;
//   - for a dead-after period once it is back, the clock less the length of
//     the outage: nodes had no way to heartbeat meanwhile, and get the time
//     they had left before it to do so now.
func (s *Server) asOf(sn *snapshot, hl *health) int64 {
	if !hl.storeOK {
		return sn.liveAt
	}
	now := time.Now().UnixNano()
	at := min(now, sn.liveAt+s.freshFor)
	if now < hl.shiftUntil {
		at = min(at, now-hl.shift)
	}
	return at
}

// parseLookup reads service and client from a raw query without building
// a url.Values. Names never need unescaping; an escaped one is unescaped
// and then checked like any other.
func parseLookup(raw string) (service, client string, msg string) {
	var haveS, haveC bool
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(v, "%+") {
			u, err := url.QueryUnescape(v)
			if err != nil {
				return "", "", "bad escaping in query parameter " + k
			}
			v = u
		}
		switch k {
		case "service":
			if haveS {
				return "", "", "query parameter service given twice"
			}
			service, haveS = v, true
		case "client":
			if haveC {
				return "", "", "query parameter client given twice"
			}
			client, haveC = v, true
		}
	}
	if !haveS && !haveC {
		return "", "", "give service=S, client=C, or both"
	}
	if haveS {
		if err := protocol.ValidName(service); err != nil {
			return "", "", "service: " + err.Error()
		}
	}
	if haveC {
		if err := protocol.ValidName(client); err != nil {
			return "", "", "client: " + err.Error()
		}
	}
	return service, client, ""
}

// handleNodes answers GET /v1/nodes?service=S, ?client=C and
// ?service=S&client=C (1st to 4th embodiments).
func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	service, client, msg := parseLookup(r.URL.RawQuery)
	if msg != "" {
		s.metrics.count(formInvalid, http.StatusBadRequest)
		code := CodeBadRequest
		if strings.HasPrefix(msg, "service:") || strings.HasPrefix(msg, "client:") {
			code = CodeInvalidName
		}
		errorf(w, http.StatusBadRequest, code, msg)
		return
	}
	form := lookupForm(service, client)
	sn, hl := s.snap.Load(), s.health.Load()
	if sn == nil {
		s.notReady(w, form)
		return
	}
	tier, fromCache := "", false
	if client != "" {
		c, found, cached, err := s.resolveClient(r.Context(), client)
		if err != nil {
			s.metrics.count(form, http.StatusServiceUnavailable)
			w.Header()["Retry-After"] = s.retryWait
			writeError(w, http.StatusServiceUnavailable, apiError{Code: CodeStoreUnavailable, Client: client,
				Message: "the store is unavailable and client " + client + " is not in the directory's cache; retry later"})
			return
		}
		fromCache = cached
		if !found {
			if service == "" {
				s.metrics.count(form, http.StatusNotFound)
				s.lookupHeaders(w.Header(), hl, fromCache)
				writeError(w, http.StatusNotFound, apiError{Code: CodeUnknownClient, Client: client,
					Message: "client " + client + " is not in the client map"})
				return
			}
			// ?service=S&client=C with C unmapped: S's default tier, as
			// negotiate does for an unmapped device.
		} else {
			if service != "" && c.Service != service {
				s.metrics.count(form, http.StatusConflict)
				writeError(w, http.StatusConflict, apiError{Code: CodeClientMismatch, Service: service, Client: client,
					Message: "client " + client + " belongs to service " + c.Service + ", not " + service})
				return
			}
			service, tier = c.Service, c.Tier
		}
	}
	sv := sn.services[service]
	if sv == nil {
		s.metrics.count(form, http.StatusNotFound)
		s.lookupHeaders(w.Header(), hl, fromCache)
		m := "service " + service + " is not in the map"
		if client != "" && service != "" {
			m = "client " + client + " maps to service " + service + ", which is not in the map"
		}
		writeError(w, http.StatusNotFound, apiError{Code: CodeUnknownService, Service: service, Message: m})
		return
	}
	if tier == "" {
		tier = sv.defaultTier
	}
	g := sv.tiers[tier]
	if g == nil {
		s.metrics.count(form, http.StatusNotFound)
		s.lookupHeaders(w.Header(), hl, fromCache)
		writeError(w, http.StatusNotFound, apiError{Code: CodeUnknownTier, Service: service, Tier: tier, Client: client,
			Message: "service " + service + " has no tier " + tier})
		return
	}
	ms := g.live(s.asOf(sn, hl))
	h := w.Header()
	s.lookupHeaders(h, hl, fromCache)
	if len(ms) == 0 {
		s.noLiveNodes(w, g, form)
		return
	}
	tag := g.etagOf(ms)
	h["Etag"] = tag
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, tag[0]) {
		s.metrics.count(form, http.StatusNotModified)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	bp := bufPool.Get().(*[]byte)
	body := g.appendBody((*bp)[:0], ms, s.cfg.Spread)
	h["Content-Type"] = hdrJSON
	h["X-Content-Type-Options"] = hdrNoSniff
	s.metrics.count(form, http.StatusOK)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	*bp = body
	bufPool.Put(bp)
}

func (s *Server) notReady(w http.ResponseWriter, form int) {
	s.metrics.count(form, http.StatusServiceUnavailable)
	w.Header()["Retry-After"] = s.retryWait
	errorf(w, http.StatusServiceUnavailable, CodeNotReady, "the directory has not loaded the map yet (store unreachable?); retry later")
}

func (s *Server) noLiveNodes(w http.ResponseWriter, g *group, form int) {
	s.metrics.count(form, http.StatusServiceUnavailable)
	w.Header()["Retry-After"] = s.retryWait
	w.Header()["Cache-Control"] = hdrNoStore
	n := g.assigned
	msg := "no live active node serves service " + g.service + " tier " + g.tier
	if n == 0 {
		msg += ": no node is assigned to it"
	} else {
		msg += ": its assigned nodes are dead, not active, or unknown"
	}
	writeError(w, http.StatusServiceUnavailable, apiError{Code: CodeNoLiveNodes, Service: g.service, Tier: g.tier, Assigned: &n, Message: msg})
}

// etagMatch implements If-None-Match's weak comparison.
func etagMatch(header, tag string) bool {
	want := strings.TrimPrefix(tag, "W/")
	for header != "" {
		var one string
		one, header, _ = strings.Cut(header, ",")
		one = strings.TrimSpace(one)
		if one == "*" || strings.TrimPrefix(one, "W/") == want {
			return true
		}
	}
	return false
}

// handleMap answers GET /v1/map: every service's tiers with their live
// active nodes (12th embodiment).
func (s *Server) handleMap(w http.ResponseWriter, r *http.Request) {
	sn, hl := s.snap.Load(), s.health.Load()
	if sn == nil {
		s.notReady(w, formMap)
		return
	}
	h := w.Header()
	s.lookupHeaders(h, hl, false)
	body, tag := sn.mapBody, sn.mapETag
	if at := s.asOf(sn, hl); at >= sn.mapUntil {
		body = sn.mapJSON(at)
		tag = []string{etag(sn.version, "", "", fnvBytes(body))}
	}
	h["Etag"] = tag
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, tag[0]) {
		s.metrics.count(formMap, http.StatusNotModified)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h["Content-Type"] = hdrJSON
	s.metrics.count(formMap, http.StatusOK)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// healthAnswer is the /healthz body.
type healthAnswer struct {
	// Status is "ok", "degraded" (serving a stale map: the store is down)
	// or "starting" (no map loaded yet).
	Status     string `json:"status"`
	MapVersion int64  `json:"map_version"`
	// Store is "ok", "unavailable" or "empty" (the map has no services:
	// a new store, or one that lost its data with no seed to restore).
	Store      string     `json:"store"`
	StaleSince *time.Time `json:"stale_since,omitempty"`
	StoreError string     `json:"store_error,omitempty"`
	// MapAge is how old the served map is, in seconds.
	MapAge float64 `json:"map_age_seconds"`
	// Nodes counts the nodes in the map, Live those listed.
	Nodes int `json:"nodes"`
	Live  int `json:"live_nodes"`
	// Services counts the services in the map.
	Services int `json:"services"`
	// StoreResets counts the times the store lost its data while this
	// directory ran; LastStoreReset is the last, and Reseeded says
	// whether the seed was applied after it.
	StoreResets    int64      `json:"store_resets"`
	LastStoreReset *time.Time `json:"last_store_reset,omitempty"`
	Reseeded       bool       `json:"reseeded,omitempty"`
}

// handleHealth answers GET /healthz: 200 while the directory can answer
// lookups (with a stale map too: a store outage takes every directory at
// once, and pulling them all out of a load balancer would turn a degraded
// service into none), 503 until a first map is loaded.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	sn, hl := s.snap.Load(), s.health.Load()
	a := healthAnswer{Status: "ok", Store: "ok"}
	if !hl.storeOK {
		a.Status, a.Store, a.StoreError = "degraded", "unavailable", hl.err
		since := hl.since.UTC()
		a.StaleSince = &since
	}
	status := http.StatusOK
	if sn == nil {
		a.Status, status = "starting", http.StatusServiceUnavailable
	} else {
		a.MapVersion, a.Nodes, a.Live, a.Services = sn.version, sn.nodes, sn.live, len(sn.services)
		a.MapAge = math.Round(time.Since(time.Unix(0, sn.readAt)).Seconds()*1000) / 1000
		if hl.storeOK && len(sn.services) == 0 {
			a.Status, a.Store = "degraded", "empty"
		}
	}
	if rs := s.reset.Load(); rs.count > 0 {
		at := rs.at.UTC()
		a.StoreResets, a.LastStoreReset, a.Reseeded = rs.count, &at, rs.reseeded
	}
	w.Header()["Cache-Control"] = hdrNoStore
	writeJSON(w, status, a)
}
