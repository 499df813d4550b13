package directory

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/store"
)

func testMap(now time.Time) store.Map {
	node := func(id string, conns, capacity int, cpu float64, beat time.Time, state store.NodeState) store.Node {
		return store.Node{ID: id, URL: "ws://" + id + "/ws", State: state, Capacity: capacity,
			Load: store.Load{Connections: conns, CPU: cpu}, Heartbeat: beat}
	}
	return store.Map{
		Version: 7,
		Nodes: map[string]store.Node{
			"a":     node("a", 90, 100, 0, now, store.StateActive),                     // 0.9
			"b":     node("b", 10, 100, 0, now.Add(-4*time.Second), store.StateActive), // 0.1, expires first
			"c":     node("c", 0, 100, 0.5, now, store.StateActive),                    // CPU 0.5
			"dup":   {ID: "dup", URL: "ws://a/ws", State: store.StateActive, Heartbeat: now},
			"sleep": node("sleep", 0, 0, 0, now, store.StateSleep),
		},
		Services: map[string]store.Service{
			"s": {Name: "s", DefaultTier: "free", Tiers: map[string][]string{"free": {"a", "b", "c", "dup", "sleep", "ghost"}, "paid": {}}},
		},
	}
}

func TestBuildOrdersAndFilters(t *testing.T) {
	now := time.Now()
	ttl := store.DeadAfter(2 * time.Second) // 5s
	sn := build(testMap(now), now, now, ttl)
	g := sn.services["s"].tiers["free"]
	var ids []string
	for _, m := range g.members {
		ids = append(ids, m.id)
	}
	if strings.Join(ids, ",") != "b,c,a" || g.assigned != 6 {
		t.Fatalf("members %v (assigned %d), want b,c,a: by load, without the duplicate URL, the sleeping and the unknown node", ids, g.assigned)
	}
	body := g.appendBody(nil, g.members, 0)
	var a struct {
		Service, Tier string
		HandshakeURL  []string `json:"handshakeUrl"`
	}
	if err := json.Unmarshal(body, &a); err != nil || a.Service != "s" || a.Tier != "free" || strings.Join(a.HandshakeURL, " ") != "ws://b/ws ws://c/ws ws://a/ws" {
		t.Errorf("body %s (%v)", body, err)
	}
	if sn.live != 3 || sn.nodes != 5 {
		t.Errorf("live %d nodes %d", sn.live, sn.nodes)
	}
}

// A node whose heartbeat expires between two reloads leaves the answers at
// once, and the ETag changes with it; judged as of the read time (store
// down) it stays.
func TestLivenessAtRequestTime(t *testing.T) {
	now := time.Now()
	ttl := store.DeadAfter(2 * time.Second)
	sn := build(testMap(now), now, now, ttl)
	g := sn.services["s"].tiers["free"]
	if ms := g.live(now.UnixNano()); len(ms) != 3 {
		t.Fatalf("at read time: %d live", len(ms))
	}
	later := now.Add(1500 * time.Millisecond).UnixNano() // b's heartbeat is 5.5s old
	ms := g.live(later)
	if len(ms) != 2 || ms[0].id != "c" {
		t.Fatalf("later: %v", ms)
	}
	if g.etagOf(ms)[0] == g.etag[0] {
		t.Error("ETag unchanged when a node left")
	}
	if g.etagOf(g.live(now.UnixNano()))[0] != g.etag[0] {
		t.Error("ETag of the full list differs")
	}
	if !strings.Contains(string(sn.mapJSON(later)), `"free":["ws://c/ws","ws://a/ws"]`) || sn.mapUntil > later {
		t.Errorf("map later: %s", sn.mapJSON(later))
	}
	stale := &health{storeOK: false}
	if at := (&Server{}).asOf(sn, stale); at != sn.liveAt {
		t.Errorf("asOf while the store is down = %d, want the read time %d", at, sn.readAt)
	}
}

func TestSpreadOrder(t *testing.T) {
	ms := []member{{score: 0.5}, {score: 0.52}, {score: 0.9}}
	first := map[int]int{}
	for range 1000 {
		idx := spreadOrder(ms, 0.1, nil)
		if len(idx) != 3 || idx[2] != 2 {
			t.Fatalf("order %v: the far more loaded node must come last", idx)
		}
		first[idx[0]]++
	}
	if first[1] < 100 || first[0] < first[1] {
		t.Errorf("first counts %v: close loads should share the head, the lighter more often", first)
	}
	for range 100 {
		if idx := spreadOrder(ms, 0, nil); idx[0] != 0 || idx[1] != 1 {
			t.Fatalf("no spread: %v", idx)
		}
	}
}

func TestScoreWithoutCapacity(t *testing.T) {
	nodes := map[string]store.Node{
		"x": {ID: "x", Load: store.Load{Connections: 100}},
		"y": {ID: "y", Load: store.Load{Connections: 50}},
		"z": {ID: "z", Capacity: 1000, Load: store.Load{Connections: 500}},
	}
	ms := []member{{id: "x"}, {id: "y"}, {id: "z"}}
	scoreMembers(ms, nodes)
	// Uncapped nodes are measured against the largest capacity (1000).
	if ms[0].score != 0.1 || ms[1].score != 0.05 || ms[2].score != 0.5 {
		t.Errorf("scores %v %v %v", ms[0].score, ms[1].score, ms[2].score)
	}
}

func TestParseLookup(t *testing.T) {
	for _, tc := range []struct {
		q, service, client string
		bad                bool
	}{
		{q: "service=s", service: "s"},
		{q: "client=c", client: "c"},
		{q: "service=s&client=c&other=1", service: "s", client: "c"},
		{q: "service=a%40b", service: "a@b"},
		{q: "", bad: true},
		{q: "other=1", bad: true},
		{q: "service=", bad: true},
		{q: "service=a b", bad: true},
		{q: "service=a+b", bad: true},
		{q: "service=s&service=s", bad: true},
		{q: "client=%", bad: true},
		{q: "service=" + strings.Repeat("x", 129), bad: true},
	} {
		s, c, msg := parseLookup(tc.q)
		if (msg != "") != tc.bad || s != tc.service || c != tc.client {
			t.Errorf("parseLookup(%q) = %q, %q, %q", tc.q, s, c, msg)
		}
	}
}

func FuzzParseLookup(f *testing.F) {
	for _, q := range []string{"service=s", "client=c&service=s", "service=%41", "a=b&&c"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		s, c, msg := parseLookup(q)
		if msg == "" && s == "" && c == "" {
			t.Errorf("%q: accepted without a name", q)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		key  string
	}{
		{"defaults", Config{}, ""},
		{"no listener", Config{Listen: "-"}, ""},
		{"bad listen", Config{Listen: "nope"}, "directory.listen"},
		{"bad port", Config{Listen: ":99999"}, "directory.listen"},
		{"refresh too slow", Config{RefreshInterval: 5 * time.Second}, "directory.refresh_interval"},
		{"sub-second max age", Config{MaxAge: 500 * time.Millisecond}, "directory.max_age"},
		{"spread above 1", Config{Spread: 2}, "directory.spread"},
		{"short token ttl", Config{TokenTTL: time.Second}, "directory.token_ttl"},
		{"short secret", Config{RegistrationSecrets: map[string]string{"s": "short"}}, "directory.registration_secrets.s"},
		{"bad service", Config{RegistrationSecrets: map[string]string{"a.b": "long-enough-secret-here"}}, "directory.registration_secrets.a.b"},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != (tc.key == "") || (err != nil && !strings.Contains(err.Error(), tc.key+":")) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.key)
		}
	}
}
