package directory

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/store"
)

// Admin API types, shared by the server and AdminClient.

// AdminNode is a node as the admin API shows it.
type AdminNode struct {
	store.Node
	// Live reports whether the node's heartbeat is fresh.
	Live bool `json:"live"`
	// Conns is the number of connections registered for the node.
	Conns int `json:"conns"`
}

// AdminMap is the answer of GET /v1/admin/map: the whole map as stored,
// with liveness.
type AdminMap struct {
	Version  int64           `json:"version"`
	Nodes    []AdminNode     `json:"nodes"`
	Services []store.Service `json:"services"`
	// BalancerLeader is the ID of the leading balancer, when one runs.
	BalancerLeader string `json:"balancer_leader,omitempty"`
}

// DecisionsAnswer is the answer of GET /v1/admin/decisions: the balancer's
// recent decisions (bus.Decision, docs/balancer.md), newest first.
type DecisionsAnswer struct {
	Leader    string            `json:"leader,omitempty"`
	Decisions []json.RawMessage `json:"decisions"`
}

// ServiceSpec is the body of PUT /v1/admin/services/{name}.
type ServiceSpec struct {
	// DefaultTier defaults to store.DefaultTier ("free").
	DefaultTier string `json:"default_tier,omitempty"`
	// Tiers are created (empty) when missing; existing tiers are kept.
	Tiers []string `json:"tiers,omitempty"`
}

// NodeSpec is the body of PUT /v1/admin/nodes/{id}.
type NodeSpec struct {
	URL string `json:"url"`
	// State defaults to the node's current state, or active for a new node.
	State    store.NodeState `json:"state,omitempty"`
	Class    string          `json:"class,omitempty"`
	Capacity int             `json:"capacity,omitempty"`
}

// StateSpec is the body of PUT /v1/admin/nodes/{id}/state.
type StateSpec struct {
	State store.NodeState `json:"state"`
}

// ClientSpec is the body of PUT /v1/admin/clients/{id}.
type ClientSpec struct {
	Service string `json:"service"`
	// Tier defaults to the service's default tier at lookup time.
	Tier string `json:"tier,omitempty"`
}

// ClientPage is the answer of GET /v1/admin/clients.
type ClientPage struct {
	Clients []store.Client `json:"clients"`
	// Next, when set, is the after= value of the next page.
	Next string `json:"next,omitempty"`
}

// ChangeAnswer is the answer of every admin change: the map version after
// it (client changes do not move it).
type ChangeAnswer struct {
	Version int64 `json:"version"`
}

// maxAdminBody bounds admin request bodies (seeds included).
const maxAdminBody = 8 << 20

func (s *Server) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	handle(mux, "/v1/admin/map", methods{http.MethodGet: s.adminMap})
	handle(mux, "/v1/admin/services", methods{http.MethodGet: s.adminServices})
	handle(mux, "/v1/admin/services/{name}", methods{
		http.MethodGet: s.adminService, http.MethodPut: s.adminPutService, http.MethodDelete: s.adminDeleteService,
	})
	handle(mux, "/v1/admin/services/{service}/tiers/{tier}/nodes/{node}", methods{
		http.MethodPut: s.adminAssign, http.MethodDelete: s.adminUnassign,
	})
	handle(mux, "/v1/admin/nodes", methods{http.MethodGet: s.adminNodes})
	handle(mux, "/v1/admin/nodes/{id}", methods{
		http.MethodGet: s.adminNode, http.MethodPut: s.adminPutNode, http.MethodDelete: s.adminDeleteNode,
	})
	handle(mux, "/v1/admin/nodes/{id}/state", methods{http.MethodPut: s.adminSetState})
	handle(mux, "/v1/admin/clients", methods{http.MethodGet: s.adminClients})
	handle(mux, "/v1/admin/clients/{id}", methods{
		http.MethodGet: s.adminClient, http.MethodPut: s.adminPutClient, http.MethodDelete: s.adminDeleteClient,
	})
	handle(mux, "/v1/admin/seed", methods{http.MethodPost: s.adminSeed})
	handle(mux, "/v1/admin/decisions", methods{http.MethodGet: s.adminDecisions})
	handle(mux, "/v1/admin/revocations", methods{http.MethodGet: s.adminRevocations, http.MethodPost: s.adminRevoke})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		errorf(w, http.StatusNotFound, CodeNotFound, "no such admin path: "+r.URL.Path)
	})
	want := sha256.Sum256([]byte(s.cfg.AdminToken))
	prev := sha256.Sum256([]byte(s.cfg.PreviousAdminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Cache-Control"] = hdrNoStore
		if s.cfg.AdminToken == "" {
			errorf(w, http.StatusNotFound, CodeAdminDisabled, "the admin API is disabled: set directory.admin_token")
			return
		}
		now := time.Now()
		ip, ok := s.lim.guard(w, r, now)
		if !ok {
			return
		}
		cred, ok := bearer(r)
		if !ok {
			unauthorized(w, CodeUnauthorized, "the admin API needs Authorization: Bearer <admin token>")
			return
		}
		got := sha256.Sum256([]byte(cred))
		ok = subtle.ConstantTimeCompare(got[:], want[:]) == 1
		if s.cfg.PreviousAdminToken != "" && subtle.ConstantTimeCompare(got[:], prev[:]) == 1 {
			ok = true // the token being rotated out
		}
		if !ok {
			s.lim.failed(ip, now)
			errorf(w, http.StatusForbidden, CodeForbidden, "wrong admin token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// storeError answers a store error with the matching status.
func storeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		errorf(w, http.StatusNotFound, CodeNotFound, err.Error())
	case errors.Is(err, store.ErrInvalid):
		errorf(w, http.StatusBadRequest, CodeBadRequest, err.Error())
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
		errorf(w, http.StatusConflict, CodeConflict, err.Error())
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		errorf(w, http.StatusServiceUnavailable, CodeStoreUnavailable, err.Error())
	default:
		errorf(w, http.StatusInternalServerError, CodeInternal, err.Error())
	}
}

func (s *Server) storeCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
}

// decodeBody decodes a strict JSON body into v, answering 400 itself.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		errorf(w, http.StatusBadRequest, CodeBadRequest, "body: "+err.Error())
		return false
	}
	if dec.More() {
		errorf(w, http.StatusBadRequest, CodeBadRequest, "body: more than one JSON value")
		return false
	}
	return true
}

// pathNames returns the named path values, answering 400 when one is not a
// valid name.
func pathNames(w http.ResponseWriter, r *http.Request, keys ...string) ([]string, bool) {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = r.PathValue(k)
		if err := protocol.ValidName(out[i]); err != nil {
			errorf(w, http.StatusBadRequest, CodeInvalidName, k+": "+err.Error())
			return nil, false
		}
	}
	return out, true
}

// done finishes an admin change: refresh, announce, answer the version.
func (s *Server) done(w http.ResponseWriter, r *http.Request) { s.doneWith(w, r, bus.ReasonAdmin) }

func (s *Server) doneWith(w http.ResponseWriter, r *http.Request, reason string) {
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	v := s.changed(ctx, reason)
	writeJSON(w, http.StatusOK, ChangeAnswer{Version: v})
}

func (s *Server) adminMap(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	m, err := s.st.Map(ctx)
	if err != nil {
		storeError(w, err)
		return
	}
	counts, err := s.st.ConnCounts(ctx)
	if err != nil {
		storeError(w, err)
		return
	}
	now := time.Now()
	a := AdminMap{Version: m.Version, Nodes: []AdminNode{}, Services: []store.Service{}}
	if l, err := s.st.LeaseHolder(ctx, store.LeaseBalancer); err == nil {
		a.BalancerLeader = l.Holder
	}
	for _, id := range slices.Sorted(maps.Keys(m.Nodes)) {
		n := m.Nodes[id]
		a.Nodes = append(a.Nodes, AdminNode{Node: n, Live: n.Live(now, s.ttl), Conns: counts[id]})
	}
	for _, name := range slices.Sorted(maps.Keys(m.Services)) {
		a.Services = append(a.Services, m.Services[name])
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) adminServices(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	m, err := s.st.Map(ctx)
	if err != nil {
		storeError(w, err)
		return
	}
	out := []store.Service{}
	for _, name := range slices.Sorted(maps.Keys(m.Services)) {
		out = append(out, m.Services[name])
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) adminService(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "name")
	if !ok {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	m, err := s.st.Map(ctx)
	if err != nil {
		storeError(w, err)
		return
	}
	sv, ok := m.Services[names[0]]
	if !ok {
		errorf(w, http.StatusNotFound, CodeUnknownService, "no service "+names[0])
		return
	}
	writeJSON(w, http.StatusOK, sv)
}

func (s *Server) adminPutService(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "name")
	if !ok {
		return
	}
	var spec ServiceSpec
	if !decodeBody(w, r, &spec) {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	if err := s.st.PutService(ctx, names[0], spec.DefaultTier, spec.Tiers); err != nil {
		storeError(w, err)
		return
	}
	s.done(w, r)
}

func (s *Server) adminDeleteService(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "name")
	if !ok {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	if err := s.st.DeleteService(ctx, names[0]); err != nil {
		storeError(w, err)
		return
	}
	s.done(w, r)
}

func (s *Server) adminAssign(w http.ResponseWriter, r *http.Request)   { s.assign(w, r, true) }
func (s *Server) adminUnassign(w http.ResponseWriter, r *http.Request) { s.assign(w, r, false) }

func (s *Server) assign(w http.ResponseWriter, r *http.Request, add bool) {
	names, ok := pathNames(w, r, "service", "tier", "node")
	if !ok {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	var err error
	if add {
		err = s.st.Assign(ctx, names[0], names[1], names[2])
	} else {
		err = s.st.Unassign(ctx, names[0], names[1], names[2])
	}
	if err != nil {
		storeError(w, err)
		return
	}
	s.done(w, r)
}

func (s *Server) adminNodes(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	m, err := s.st.Map(ctx)
	if err != nil {
		storeError(w, err)
		return
	}
	counts, err := s.st.ConnCounts(ctx)
	if err != nil {
		storeError(w, err)
		return
	}
	now := time.Now()
	out := []AdminNode{}
	for _, id := range slices.Sorted(maps.Keys(m.Nodes)) {
		n := m.Nodes[id]
		out = append(out, AdminNode{Node: n, Live: n.Live(now, s.ttl), Conns: counts[id]})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) adminNode(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "id")
	if !ok {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	n, err := s.st.Node(ctx, names[0])
	if err != nil {
		storeError(w, err)
		return
	}
	conns, err := s.st.ConnsOfNode(ctx, n.ID)
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, AdminNode{Node: n, Live: n.Live(time.Now(), s.ttl), Conns: len(conns)})
}

func (s *Server) adminPutNode(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "id")
	if !ok {
		return
	}
	var spec NodeSpec
	if !decodeBody(w, r, &spec) {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	if spec.State == "" {
		spec.State = store.StateActive
		if old, err := s.st.Node(ctx, names[0]); err == nil {
			spec.State = old.State
		} else if !errors.Is(err, store.ErrNotFound) {
			storeError(w, err)
			return
		}
	}
	n := store.Node{ID: names[0], URL: spec.URL, State: spec.State, Class: spec.Class, Capacity: spec.Capacity}
	if err := s.st.PutNode(ctx, n); err != nil {
		storeError(w, err)
		return
	}
	s.done(w, r)
}

func (s *Server) adminDeleteNode(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "id")
	if !ok {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	if err := s.st.RemoveNode(ctx, names[0]); err != nil {
		storeError(w, err)
		return
	}
	s.done(w, r)
}

func (s *Server) adminSetState(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "id")
	if !ok {
		return
	}
	var spec StateSpec
	if !decodeBody(w, r, &spec) {
		return
	}
	if !spec.State.Valid() {
		errorf(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("state %q: want active, standby, draining or sleep", spec.State))
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	if err := s.st.SetNodeState(ctx, names[0], spec.State); err != nil {
		storeError(w, err)
		return
	}
	s.done(w, r)
}

// maxClientPage bounds GET /v1/admin/clients?limit=.
const maxClientPage = 10000

func (s *Server) adminClients(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 1000
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxClientPage {
			errorf(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("limit %q: want 1 to %d", l, maxClientPage))
			return
		}
		limit = n
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	cs, err := s.st.Clients(ctx, q.Get("after"), limit)
	if err != nil {
		storeError(w, err)
		return
	}
	p := ClientPage{Clients: cs}
	if p.Clients == nil {
		p.Clients = []store.Client{}
	}
	if len(cs) == limit {
		p.Next = cs[len(cs)-1].ID
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) adminClient(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "id")
	if !ok {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	c, err := s.st.Client(ctx, names[0])
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) adminPutClient(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "id")
	if !ok {
		return
	}
	var spec ClientSpec
	if !decodeBody(w, r, &spec) {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	// Refuse mappings that no lookup could resolve: catch typos here
	// rather than as 404s on devices.
	m, err := s.st.Map(ctx)
	if err != nil {
		storeError(w, err)
		return
	}
	sv, ok := m.Services[spec.Service]
	if !ok {
		errorf(w, http.StatusNotFound, CodeUnknownService, fmt.Sprintf("service %q does not exist", spec.Service))
		return
	}
	if _, ok := sv.Tiers[spec.Tier]; spec.Tier != "" && !ok {
		errorf(w, http.StatusNotFound, CodeUnknownTier, fmt.Sprintf("service %s has no tier %q", spec.Service, spec.Tier))
		return
	}
	if err := s.st.PutClient(ctx, store.Client{ID: names[0], Service: spec.Service, Tier: spec.Tier}); err != nil {
		storeError(w, err)
		return
	}
	s.clients.forget(names[0])
	s.done(w, r)
}

func (s *Server) adminDeleteClient(w http.ResponseWriter, r *http.Request) {
	names, ok := pathNames(w, r, "id")
	if !ok {
		return
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	if err := s.st.DeleteClient(ctx, names[0]); err != nil {
		storeError(w, err)
		return
	}
	s.clients.forget(names[0])
	s.done(w, r)
}

// adminDecisions answers the balancer's recent decisions, newest first
// (?limit=N, 1 to 1000, default 20), with the leader's ID.
func (s *Server) adminDecisions(w http.ResponseWriter, r *http.Request) {
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			errorf(w, http.StatusBadRequest, CodeBadRequest, "limit: want 1 to 1000")
			return
		}
		limit = n
	}
	ctx, cancel := s.storeCtx(r)
	defer cancel()
	recs, err := s.st.Records(ctx, store.LogDecisions, limit)
	if err != nil {
		storeError(w, err)
		return
	}
	a := DecisionsAnswer{Decisions: []json.RawMessage{}}
	for _, rec := range recs {
		if json.Valid(rec) {
			a.Decisions = append(a.Decisions, rec)
		}
	}
	if l, err := s.st.LeaseHolder(ctx, store.LeaseBalancer); err == nil {
		a.Leader = l.Holder
	}
	writeJSON(w, http.StatusOK, a)
}

// adminSeed applies a YAML seed (store.Seed's format) from the body.
func (s *Server) adminSeed(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		errorf(w, http.StatusBadRequest, CodeBadRequest, "read body: "+err.Error())
		return
	}
	seed, err := parseSeed(body)
	if err != nil {
		errorf(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*s.cfg.StoreTimeout)
	defer cancel()
	if err := seed.Apply(ctx, s.st); err != nil {
		storeError(w, err)
		return
	}
	s.clients.invalidate(time.Now().UnixNano())
	s.doneWith(w, r, bus.ReasonSeed)
}

// parseSeed decodes a seed strictly (unknown keys are errors) and
// validates it, as store.LoadSeed does for a file.
func parseSeed(b []byte) (store.Seed, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var seed store.Seed
	if err := dec.Decode(&seed); err != nil {
		if errors.Is(err, io.EOF) {
			return store.Seed{}, errors.New("seed: empty body")
		}
		return store.Seed{}, fmt.Errorf("seed: %w", err)
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("more than one YAML document")
		}
		return store.Seed{}, fmt.Errorf("seed: %w", err)
	}
	if err := seed.Validate(); err != nil {
		return store.Seed{}, fmt.Errorf("seed: %w", err)
	}
	return seed, nil
}
