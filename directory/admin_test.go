package directory_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/store"
)

func TestAdminAuth(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st)
	base := startDir(t, st, nil, nil).URL()
	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
		code   string
	}{
		{"no token", nil, 401, directory.CodeUnauthorized},
		{"not bearer", []string{"Authorization", "Basic " + adminToken}, 401, directory.CodeUnauthorized},
		{"wrong token", []string{"Authorization", "Bearer wrong"}, 403, directory.CodeForbidden},
		{"prefix of the token", []string{"Authorization", "Bearer " + adminToken[:5]}, 403, directory.CodeForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/admin/map", "/v1/admin/services/vacuum", "/v1/admin/nope"} {
				a := get(t, base+path, tc.hdr...)
				if a.Status != tc.status || a.errCode(t) != tc.code {
					t.Errorf("%s: %d %s", path, a.Status, a.Body)
				}
			}
		})
	}
	if a := get(t, base+"/v1/admin/map", "Authorization", "Bearer "+adminToken); a.Status != 200 {
		t.Errorf("right token: %d %s", a.Status, a.Body)
	}
	if a := get(t, base+"/v1/admin/nope", "Authorization", "Bearer "+adminToken); a.Status != 404 || a.errCode(t) != directory.CodeNotFound {
		t.Errorf("unknown admin path: %d %s", a.Status, a.Body)
	}
	if a := do(t, "POST", base+"/v1/admin/map", "", "Authorization", "Bearer "+adminToken); a.Status != 405 {
		t.Errorf("wrong method: %d %s", a.Status, a.Body)
	}

	// Without an admin token the admin API is off.
	off := startDir(t, st, nil, func(c *directory.Config) { c.AdminToken = "" }).URL()
	if a := get(t, off+"/v1/admin/map", "Authorization", "Bearer "+adminToken); a.Status != 404 || a.errCode(t) != directory.CodeAdminDisabled {
		t.Errorf("disabled admin API: %d %s", a.Status, a.Body)
	}
}

func TestAdminOperations(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		base := startDir(t, st, nil, nil).URL()
		ac, err := directory.NewAdminClient(base, adminToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		must := func(v int64, err error) int64 {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		status := func(err error) int {
			var e *directory.APIError
			if errors.As(err, &e) {
				return e.Status
			}
			return 0
		}

		v1 := must(ac.PutService(ctx, "vacuum", directory.ServiceSpec{DefaultTier: "free", Tiers: []string{"paid"}}))
		if _, a := getLookup(t, base, "service=vacuum"); a.Status != 503 {
			t.Errorf("new service without nodes: %d %s", a.Status, a.Body)
		}
		must(ac.PutNode(ctx, "n1", directory.NodeSpec{URL: nodeURL("n1"), Capacity: 100, Class: "high-spec"}))
		must(ac.PutNode(ctx, "n2", directory.NodeSpec{URL: nodeURL("n2")}))
		for _, n := range []string{"n1", "n2"} {
			if err := st.Heartbeat(ctx, n, store.Load{}, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		v2 := must(ac.Assign(ctx, "vacuum", "paid", "n1"))
		must(ac.Assign(ctx, "vacuum", "free", "n2"))
		if v2 <= v1 {
			t.Errorf("version %d after %d", v2, v1)
		}
		if err := lookupIs(t, base, "service=vacuum", urls("n2")...)(); err != nil {
			t.Error(err)
		}
		must(ac.PutClient(ctx, "dev-1", directory.ClientSpec{Service: "vacuum", Tier: "paid"}))
		if err := lookupIs(t, base, "client=dev-1", urls("n1")...)(); err != nil {
			t.Error(err)
		}
		// Remapping a cached client takes effect at once.
		must(ac.PutClient(ctx, "dev-1", directory.ClientSpec{Service: "vacuum", Tier: "free"}))
		if err := lookupIs(t, base, "client=dev-1", urls("n2")...)(); err != nil {
			t.Error(err)
		}
		if c, err := ac.Client(ctx, "dev-1"); err != nil || c.Tier != "free" {
			t.Errorf("client: %+v %v", c, err)
		}
		must(ac.SetNodeState(ctx, "n2", store.StateDraining))
		if _, a := getLookup(t, base, "service=vacuum"); a.Status != 503 {
			t.Errorf("draining only node: %d %s", a.Status, a.Body)
		}
		must(ac.SetNodeState(ctx, "n2", store.StateActive))
		must(ac.Assign(ctx, "vacuum", "free", "n1"))
		if err := lookupIs(t, base, "service=vacuum", urls("n1", "n2")...)(); err != nil {
			t.Error(err)
		}
		must(ac.Unassign(ctx, "vacuum", "free", "n1"))
		if err := lookupIs(t, base, "service=vacuum", urls("n2")...)(); err != nil {
			t.Error(err)
		}

		m, err := ac.Map(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Nodes) != 2 || !m.Nodes[0].Live || m.Nodes[0].Class != "high-spec" || len(m.Services) != 1 || m.Services[0].Tiers["paid"][0] != "n1" {
			t.Errorf("map %+v", m)
		}
		svs, err := ac.Services(ctx)
		if err != nil || len(svs) != 1 || svs[0].DefaultTier != "free" {
			t.Errorf("services %+v %v", svs, err)
		}
		ns, err := ac.Nodes(ctx)
		if err != nil || len(ns) != 2 || ns[1].ID != "n2" || ns[1].State != store.StateActive {
			t.Errorf("nodes %+v %v", ns, err)
		}
		if n, err := ac.Node(ctx, "n1"); err != nil || n.Capacity != 100 {
			t.Errorf("node %+v %v", n, err)
		}
		page, err := ac.Clients(ctx, "", 0)
		if err != nil || len(page.Clients) != 1 {
			t.Errorf("clients %+v %v", page, err)
		}

		// Errors.
		if _, err := ac.Assign(ctx, "vacuum", "free", "ghost"); status(err) != 404 {
			t.Errorf("assign unknown node: %v", err)
		}
		if _, err := ac.PutNode(ctx, "n3", directory.NodeSpec{URL: "http://x"}); status(err) != 400 {
			t.Errorf("bad node URL: %v", err)
		}
		if _, err := ac.PutNode(ctx, "bad.id", directory.NodeSpec{URL: nodeURL("x")}); status(err) != 400 {
			t.Errorf("bad node id: %v", err)
		}
		if _, err := ac.SetNodeState(ctx, "n1", "asleep"); status(err) != 400 {
			t.Errorf("bad state: %v", err)
		}
		if _, err := ac.SetNodeState(ctx, "ghost", store.StateSleep); status(err) != 404 {
			t.Errorf("state of unknown node: %v", err)
		}
		if _, err := ac.PutClient(ctx, "dev-2", directory.ClientSpec{Service: "ghost"}); status(err) != 404 {
			t.Errorf("client of unknown service: %v", err)
		}
		if _, err := ac.PutClient(ctx, "dev-2", directory.ClientSpec{Service: "vacuum", Tier: "gold"}); status(err) != 404 {
			t.Errorf("client of unknown tier: %v", err)
		}
		if _, err := ac.Client(ctx, "ghost"); !directory.IsNotFound(err) {
			t.Errorf("unknown client: %v", err)
		}
		a := do(t, "PUT", base+"/v1/admin/services/tv", `{"default_tier":"free","bogus":1}`, "Authorization", "Bearer "+adminToken)
		if a.Status != 400 || a.errCode(t) != directory.CodeBadRequest {
			t.Errorf("unknown field: %d %s", a.Status, a.Body)
		}

		// Removals.
		must(ac.DeleteClient(ctx, "dev-1"))
		if _, a := getLookup(t, base, "client=dev-1"); a.Status != 404 {
			t.Errorf("deleted client: %d %s", a.Status, a.Body)
		}
		must(ac.RemoveNode(ctx, "n2"))
		if _, a := getLookup(t, base, "service=vacuum"); a.Status != 503 {
			t.Errorf("removed node: %d %s", a.Status, a.Body)
		}
		must(ac.DeleteService(ctx, "vacuum"))
		if _, a := getLookup(t, base, "service=vacuum"); a.Status != 404 {
			t.Errorf("deleted service: %d %s", a.Status, a.Body)
		}

		// Seed.
		seed := `
nodes:
  - id: s1
    url: ws://s1.example:18080/ws
services:
  tv:
    default_tier: free
    tiers:
      free: [s1]
clients:
  - id: tv-1
    service: tv
`
		must(ac.Seed(ctx, []byte(seed)))
		if err := st.Heartbeat(ctx, "s1", store.Load{}, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := ac.Seed(ctx, []byte(seed)); err != nil { // applying twice is fine, and refreshes
			t.Fatal(err)
		}
		if err := lookupIs(t, base, "client=tv-1", "ws://s1.example:18080/ws")(); err != nil {
			t.Error(err)
		}
		if _, err := ac.Seed(ctx, []byte("nodes: [{id: x, url: ws://x/ws, bogus: 1}]")); status(err) != 400 {
			t.Errorf("seed with unknown key: %v", err)
		}
		if _, err := ac.Seed(ctx, []byte("services: {tv: {tiers: {free: [nope]}}}")); status(err) != 400 {
			t.Errorf("invalid seed: %v", err)
		}
	})
}
