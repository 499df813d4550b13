package directory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/store/redistest"
	"github.com/tetherhq/tether/token"
)

const adminToken = "admin-token-for-tests"

// Registration secrets and signing keys of the test services.
var (
	regSecrets = map[string]string{"vacuum": "vacuum-registration-secret", "aircon": "aircon-registration-secret"}
	hmacKeys   = map[string]string{
		"vacuum": "vacuum-hmac-key-0123456789abcdef0123",
		"aircon": "aircon-hmac-key-0123456789abcdef0123",
		"tv":     "tv-hmac-key-0123456789abcdef01234567",
	}
)

func testKeys(t testing.TB) *token.Keyring {
	t.Helper()
	m := map[string][]token.Key{}
	for s, k := range hmacKeys {
		m[s] = []token.Key{{ID: s + "-k1", HMACSecret: k}}
	}
	kr, err := token.NewKeyring(m)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// forEachStore runs f against the memory store and a real Redis.
func forEachStore(t *testing.T, f func(t *testing.T, st store.Store)) {
	t.Run("memory", func(t *testing.T) { f(t, store.NewMemory()) })
	t.Run("redis", func(t *testing.T) { f(t, openRedis(t, redistest.Start(t))) })
}

func openRedis(t testing.TB, url string) store.Store {
	t.Helper()
	prefix := redistest.Prefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.OpenRedis(ctx, store.RedisConfig{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatalf("open redis: %v", err)
	}
	redistest.Cleanup(t, redistest.Client(t, url), prefix)
	t.Cleanup(func() { st.Close() })
	return st
}

func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("DIRECTORY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is the configuration of test directories: a free port, and a
// heartbeat interval long enough that nodes heartbeated at the start of a
// test stay live to its end.
func testConfig() directory.Config {
	return directory.Config{
		Listen:              "127.0.0.1:0",
		AdminToken:          adminToken,
		HeartbeatInterval:   30 * time.Second,
		RefreshInterval:     10 * time.Second,
		RegistrationSecrets: regSecrets,
		RefreshServices:     []string{"vacuum", "tv"},
	}
}

// startDir starts a directory on st and stops it when t ends.
func startDir(t testing.TB, st store.Store, nc *nats.Conn, mod func(*directory.Config)) *directory.Server {
	t.Helper()
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	srv, err := directory.New(cfg, directory.Deps{Store: st, NATS: nc, Keys: testKeys(t), Log: testLog(t)})
	if err != nil {
		t.Fatalf("directory.New: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("directory.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv
}

// nodeURL is the ws:// URL of test node id.
func nodeURL(id string) string { return "ws://" + id + ".example:18080/ws" }

// seedMap writes the standard test map:
//
//	vacuum: default free; paid: p1 p2 (high-spec); free: f1 f2
//	aircon: default free; free: a1
//	tv:     default free; free: (no node)
//	dead:   default free; free: d1 (stale heartbeat), s1 (standby), g1 (never heartbeated)
//	clients: dev-paid -> vacuum/paid, dev-free -> vacuum/free,
//	         dev-plain -> vacuum (no tier), dev-air -> aircon, dev-gold -> vacuum/gold (no such tier)
func seedMap(t testing.TB, st store.Store) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	type nd struct {
		id    string
		state store.NodeState
		conns int
		beat  time.Time
		class string
	}
	for _, n := range []nd{
		{"p1", store.StateActive, 10, now, "high-spec"},
		{"p2", store.StateActive, 50, now, "high-spec"},
		{"f1", store.StateActive, 0, now, ""},
		{"f2", store.StateActive, 0, now, ""},
		{"a1", store.StateActive, 0, now, ""},
		{"d1", store.StateActive, 0, now.Add(-time.Hour), ""},
		{"s1", store.StateStandby, 0, now, ""},
		{"g1", store.StateActive, 0, time.Time{}, ""},
	} {
		must(st.PutNode(ctx, store.Node{ID: n.id, URL: nodeURL(n.id), State: n.state, Class: n.class, Capacity: 100}))
		if !n.beat.IsZero() {
			must(st.Heartbeat(ctx, n.id, store.Load{Connections: n.conns}, n.beat))
		}
	}
	for svc, tiers := range map[string]map[string][]string{
		"vacuum": {"paid": {"p1", "p2"}, "free": {"f1", "f2"}},
		"aircon": {"free": {"a1"}},
		"tv":     {"free": nil},
		"dead":   {"free": {"d1", "s1", "g1"}},
	} {
		must(st.PutService(ctx, svc, "free", []string{"free"}))
		for tier, nodes := range tiers {
			for _, n := range nodes {
				must(st.Assign(ctx, svc, tier, n))
			}
		}
	}
	must(st.PutService(ctx, "vacuum", "free", []string{"free", "paid"}))
	for _, c := range []store.Client{
		{ID: "dev-paid", Service: "vacuum", Tier: "paid"},
		{ID: "dev-free", Service: "vacuum", Tier: "free"},
		{ID: "dev-plain", Service: "vacuum"},
		{ID: "dev-air", Service: "aircon"},
		{ID: "dev-gold", Service: "vacuum", Tier: "gold"},
	} {
		must(st.PutClient(ctx, c))
	}
}

// answer is an HTTP answer, read whole.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func (a answer) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.Body, v); err != nil {
		t.Fatalf("decode %s: %v", a.Body, err)
	}
}

// errCode returns the "error" member of a JSON error body.
func (a answer) errCode(t testing.TB) string {
	t.Helper()
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	a.json(t, &e)
	if e.Message == "" {
		t.Errorf("error answer without a message: %s", a.Body)
	}
	return e.Error
}

func do(t testing.TB, method, url string, body string, hdr ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func get(t testing.TB, url string, hdr ...string) answer {
	return do(t, http.MethodGet, url, "", hdr...)
}

// lookup is a /v1/nodes answer.
type lookup struct {
	Service      string   `json:"service"`
	Tier         string   `json:"tier"`
	HandshakeURL []string `json:"handshakeUrl"`
}

func getLookup(t testing.TB, base, query string) (lookup, answer) {
	t.Helper()
	a := get(t, base+"/v1/nodes?"+query)
	var l lookup
	if a.Status == http.StatusOK {
		a.json(t, &l)
	}
	return l, a
}

func sameSet(got []string, want ...string) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %v, want %v (any order)", got, want)
	}
	m := map[string]int{}
	for _, g := range got {
		m[g]++
	}
	for _, w := range want {
		if m[w] == 0 {
			return fmt.Errorf("got %v, want %v (any order)", got, want)
		}
		m[w]--
	}
	return nil
}

func urls(ids ...string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = nodeURL(id)
	}
	return out
}
