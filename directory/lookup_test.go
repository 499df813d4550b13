package directory_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/store"
)

func TestLookupForms(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		seedMap(t, st)
		base := startDir(t, st, nil, nil).URL()
		for _, tc := range []struct {
			name, query   string
			service, tier string
			nodes         []string
		}{
			{"service (1st)", "service=vacuum", "vacuum", "free", urls("f1", "f2")},
			{"service with paid client (2nd)", "service=vacuum&client=dev-paid", "vacuum", "paid", urls("p1", "p2")},
			{"service with free client (2nd)", "service=vacuum&client=dev-free", "vacuum", "free", urls("f1", "f2")},
			{"service with unmapped client: default tier", "service=vacuum&client=dev-unknown", "vacuum", "free", urls("f1", "f2")},
			{"paid client (3rd/4th)", "client=dev-paid", "vacuum", "paid", urls("p1", "p2")},
			{"free client (3rd/4th)", "client=dev-free", "vacuum", "free", urls("f1", "f2")},
			{"client without tier", "client=dev-plain", "vacuum", "free", urls("f1", "f2")},
			{"client of another service", "client=dev-air", "aircon", "free", urls("a1")},
			{"parameters in any order", "client=dev-paid&service=vacuum&x=1", "vacuum", "paid", urls("p1", "p2")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				l, a := getLookup(t, base, tc.query)
				if a.Status != http.StatusOK {
					t.Fatalf("status %d: %s", a.Status, a.Body)
				}
				if l.Service != tc.service || l.Tier != tc.tier {
					t.Errorf("service/tier = %s/%s, want %s/%s", l.Service, l.Tier, tc.service, tc.tier)
				}
				if err := sameSet(l.HandshakeURL, tc.nodes...); err != nil {
					t.Error(err)
				}
				if cc := a.Header.Get("Cache-Control"); cc != "max-age=5" {
					t.Errorf("Cache-Control = %q", cc)
				}
				if a.Header.Get("ETag") == "" || a.Header.Get("Content-Type") != "application/json" {
					t.Errorf("headers: %v", a.Header)
				}
				if a.Header.Get("X-Tether-Stale") != "" {
					t.Errorf("stale marker on a fresh answer")
				}
			})
		}
		for _, tc := range []struct {
			name, method, path string
			status             int
			code               string
		}{
			{"unknown service", "GET", "/v1/nodes?service=nope", 404, directory.CodeUnknownService},
			{"unknown client", "GET", "/v1/nodes?client=nobody", 404, directory.CodeUnknownClient},
			{"client mapped to a missing tier", "GET", "/v1/nodes?client=dev-gold", 404, directory.CodeUnknownTier},
			{"client of another service", "GET", "/v1/nodes?service=aircon&client=dev-paid", 409, directory.CodeClientMismatch},
			{"no parameter", "GET", "/v1/nodes", 400, directory.CodeBadRequest},
			{"empty service", "GET", "/v1/nodes?service=", 400, directory.CodeInvalidName},
			{"invalid service name", "GET", "/v1/nodes?service=a.b", 400, directory.CodeInvalidName},
			{"invalid escaped name", "GET", "/v1/nodes?service=a%2A", 400, directory.CodeInvalidName},
			{"bad escape", "GET", "/v1/nodes?service=%zz", 400, directory.CodeBadRequest},
			{"invalid client name", "GET", "/v1/nodes?client=a*b", 400, directory.CodeInvalidName},
			{"service twice", "GET", "/v1/nodes?service=vacuum&service=tv", 400, directory.CodeBadRequest},
			{"wrong method", "POST", "/v1/nodes?service=vacuum", 405, directory.CodeMethod},
			{"wrong method on map", "DELETE", "/v1/map", 405, directory.CodeMethod},
			{"wrong method on negotiate", "GET", "/v1/negotiate", 405, directory.CodeMethod},
			{"tier without nodes", "GET", "/v1/nodes?service=tv", 503, directory.CodeNoLiveNodes},
			{"only dead, standby and silent nodes", "GET", "/v1/nodes?service=dead", 503, directory.CodeNoLiveNodes},
			{"unknown path", "GET", "/v2/nodes", 404, directory.CodeNotFound},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := do(t, tc.method, base+tc.path, "")
				if a.Status != tc.status {
					t.Fatalf("status %d, want %d: %s", a.Status, tc.status, a.Body)
				}
				if code := a.errCode(t); code != tc.code {
					t.Errorf("error %q, want %q: %s", code, tc.code, a.Body)
				}
				if ct := a.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				switch tc.status {
				case 405:
					if a.Header.Get("Allow") == "" {
						t.Error("405 without Allow")
					}
				case 503:
					if a.Header.Get("Retry-After") == "" {
						t.Error("503 without Retry-After")
					}
				}
			})
		}
	})
}

// Nodes that are dead, not active, or never heard of are not listed, even
// next to live ones.
func TestLookupListsOnlyLiveActiveNodes(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		seedMap(t, st)
		ctx := t.Context()
		for _, n := range []string{"d1", "s1", "g1"} {
			if err := st.Assign(ctx, "vacuum", "free", n); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.SetNodeState(ctx, "f2", store.StateDraining); err != nil {
			t.Fatal(err)
		}
		// A live node that lost NATS takes no device.
		if err := st.Assign(ctx, "vacuum", "free", "a1"); err != nil {
			t.Fatal(err)
		}
		if err := st.Heartbeat(ctx, "a1", store.Load{NATSDown: true}, time.Now()); err != nil {
			t.Fatal(err)
		}
		base := startDir(t, st, nil, nil).URL()
		l, a := getLookup(t, base, "service=vacuum")
		if a.Status != 200 {
			t.Fatalf("status %d: %s", a.Status, a.Body)
		}
		if err := sameSet(l.HandshakeURL, urls("f1")...); err != nil {
			t.Error(err)
		}
		var m struct {
			Version  int64 `json:"version"`
			Services map[string]struct {
				DefaultTier string              `json:"default_tier"`
				Tiers       map[string][]string `json:"tiers"`
			} `json:"services"`
		}
		a = get(t, base+"/v1/map")
		if a.Status != 200 {
			t.Fatalf("map: %d %s", a.Status, a.Body)
		}
		a.json(t, &m)
		if m.Version == 0 || len(m.Services) != 4 {
			t.Errorf("map: %s", a.Body)
		}
		if err := sameSet(m.Services["vacuum"].Tiers["free"], urls("f1")...); err != nil {
			t.Errorf("map vacuum/free: %v", err)
		}
		if err := sameSet(m.Services["vacuum"].Tiers["paid"], urls("p1", "p2")...); err != nil {
			t.Errorf("map vacuum/paid: %v", err)
		}
		if got := m.Services["dead"].Tiers["free"]; got == nil || len(got) != 0 {
			t.Errorf("map dead/free = %v, want []", got)
		}
	})
}

// The less loaded node comes first most of the time, every live node is in
// every answer, and equally loaded nodes take turns at the head.
func TestLookupOrdering(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st) // vacuum/paid: p1 10/100 conns, p2 50/100; vacuum/free: f1, f2 idle
	base := startDir(t, st, nil, nil).URL()
	const n = 200
	first := map[string]int{}
	for range n {
		for _, q := range []string{"client=dev-paid", "service=vacuum"} {
			l, a := getLookup(t, base, q)
			if a.Status != 200 {
				t.Fatalf("status %d", a.Status)
			}
			if len(l.HandshakeURL) != 2 {
				t.Fatalf("%s: %v, want both nodes", q, l.HandshakeURL)
			}
			first[l.HandshakeURL[0]]++
		}
	}
	if p1 := first[nodeURL("p1")]; p1 < n*9/10 {
		t.Errorf("less loaded p1 first %d times of %d", p1, n)
	}
	for _, id := range []string{"f1", "f2"} {
		if c := first[nodeURL(id)]; c < n/5 {
			t.Errorf("idle %s first only %d times of %d: no spread", id, c, n)
		}
	}
}

// With spread off the order is strictly by load.
func TestLookupStrictOrder(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st)
	base := startDir(t, st, nil, func(c *directory.Config) { c.Spread = -1 }).URL()
	for range 50 {
		l, _ := getLookup(t, base, "client=dev-paid")
		if strings.Join(l.HandshakeURL, " ") != nodeURL("p1")+" "+nodeURL("p2") {
			t.Fatalf("order %v", l.HandshakeURL)
		}
	}
}

func TestETag(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		seedMap(t, st)
		srv := startDir(t, st, nil, nil)
		base := srv.URL()
		for _, path := range []string{"/v1/nodes?service=vacuum", "/v1/nodes?client=dev-paid", "/v1/map"} {
			a := get(t, base+path)
			tag := a.Header.Get("ETag")
			if a.Status != 200 || !strings.HasPrefix(tag, `W/"`) {
				t.Fatalf("%s: %d, ETag %q", path, a.Status, tag)
			}
			nm := get(t, base+path, "If-None-Match", tag)
			if nm.Status != http.StatusNotModified || len(nm.Body) != 0 {
				t.Errorf("%s: If-None-Match: %d %s", path, nm.Status, nm.Body)
			}
			if nm.Header.Get("ETag") != tag || nm.Header.Get("Cache-Control") == "" {
				t.Errorf("%s: 304 headers %v", path, nm.Header)
			}
			if a := get(t, base+path, "If-None-Match", `"other", `+tag); a.Status != 304 {
				t.Errorf("%s: list with the tag: %d", path, a.Status)
			}
			if a := get(t, base+path, "If-None-Match", `W/"0-0"`); a.Status != 200 {
				t.Errorf("%s: other tag: %d", path, a.Status)
			}
		}
		// A change of the list changes the tag.
		a := get(t, base+"/v1/nodes?service=vacuum")
		tag := a.Header.Get("ETag")
		if err := st.Assign(t.Context(), "vacuum", "free", "a1"); err != nil {
			t.Fatal(err)
		}
		if err := srv.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		a = get(t, base+"/v1/nodes?service=vacuum", "If-None-Match", tag)
		if a.Status != 200 || a.Header.Get("ETag") == tag {
			t.Errorf("after a change: %d, ETag %q (was %q)", a.Status, a.Header.Get("ETag"), tag)
		}
	})
}

func TestHealthAndMetrics(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st)
	base := startDir(t, st, nil, nil).URL()
	var h struct {
		Status     string `json:"status"`
		MapVersion int64  `json:"map_version"`
		Store      string `json:"store"`
		StaleSince string `json:"stale_since"`
	}
	a := get(t, base+"/healthz")
	a.json(t, &h)
	if a.Status != 200 || h.Status != "ok" || h.Store != "ok" || h.MapVersion == 0 || h.StaleSince != "" {
		t.Errorf("healthz: %d %s", a.Status, a.Body)
	}
	getLookup(t, base, "service=vacuum")
	get(t, base+"/v1/nodes?service=nope")
	get(t, base+"/v1/nodes?service=bad%20name")
	a = get(t, base+"/metrics")
	for _, want := range []string{
		`tether_directory_lookups_total{class="2xx"} 1`, "tether_directory_stale 0",
		`tether_directory_requests_total{form="service",status="200"} 1`,
		`tether_directory_requests_total{form="service",status="404"} 1`,
		`tether_directory_requests_total{form="invalid",status="400"} 1`,
	} {
		if a.Status != 200 || !strings.Contains(string(a.Body), want) {
			t.Errorf("metrics lack %s: %d\n%s", want, a.Status, a.Body)
		}
	}
}

// Lookups are readable from pages of any origin (a device in a browser
// asks the directory itself); the admin API is not.
func TestLookupCORS(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st)
	base := startDir(t, st, nil, nil).URL()
	a := do(t, http.MethodOptions, base+"/v1/nodes?service=vacuum", "",
		"Origin", "https://app.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "if-none-match")
	if a.Status != 204 || a.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(a.Header.Get("Access-Control-Allow-Headers"), "If-None-Match") {
		t.Fatalf("preflight: %d %v", a.Status, a.Header)
	}
	for _, path := range []string{"/v1/nodes?service=vacuum", "/v1/map"} {
		a = get(t, base+path, "Origin", "https://app.example")
		if a.Status != 200 || a.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(a.Header.Get("Access-Control-Expose-Headers"), "ETag") {
			t.Errorf("GET %s from a page: %d %v", path, a.Status, a.Header)
		}
	}
	if a = get(t, base+"/v1/admin/map", "Origin", "https://app.example"); a.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("admin API allows other origins: %v", a.Header)
	}
}
