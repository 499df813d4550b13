package directory_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/internal/certs/certstest"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/token"
)

// Refresh only for the services that allow it, never past the maximum
// lifetime of the token's chain, and never for a revoked token.
func TestRefreshLimits(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st)
	base := startDir(t, st, nil, func(c *directory.Config) {
		c.RefreshServices = []string{"vacuum"}
		c.TokenTTL, c.MaxTokenLifetime = 24*time.Hour, 48*time.Hour
	}).URL()
	keys := testKeys(t)
	refresh := func(tok string) answer { return negotiate(t, base, tok, "") }

	// aircon: refresh not enabled, however valid the token.
	air, _ := keys.Issue("aircon", "dev-air", token.IssueOptions{})
	if a := refresh(air); a.Status != http.StatusForbidden || a.errCode(t) != directory.CodeForbidden {
		t.Fatalf("refresh of a service without token_refresh: %d %s", a.Status, a.Body)
	}

	// vacuum: a refresh keeps the chain's start and ends with it.
	first := time.Now().Add(-40 * time.Hour)
	old := testKeys(t)
	old.SetClock(func() time.Time { return first })
	tok, _ := old.Issue("vacuum", "dev-paid", token.IssueOptions{TTL: 41 * time.Hour})
	a := refresh(tok)
	if a.Status != http.StatusOK {
		t.Fatalf("refresh: %d %s", a.Status, a.Body)
	}
	var n directory.NegotiateAnswer
	a.json(t, &n)
	c, err := keys.Verify(n.Token)
	if err != nil {
		t.Fatal(err)
	}
	limit := first.Add(48 * time.Hour)
	if !c.FirstIssued().Equal(first.Truncate(time.Second)) || c.ExpiresAt.After(limit) || time.Until(c.ExpiresAt.Time) > 9*time.Hour {
		t.Fatalf("refreshed token: first %v, exp %v; want the chain's start and an expiry by %v", c.FirstIssued(), c.ExpiresAt, limit)
	}
	// Refreshed again: still the same chain.
	a = refresh(n.Token)
	a.json(t, &n)
	if c2, _ := keys.Verify(n.Token); a.Status != http.StatusOK || !c2.FirstIssued().Equal(c.FirstIssued()) {
		t.Fatalf("second refresh: %d %s", a.Status, a.Body)
	}

	// A chain older than the maximum lifetime is not refreshed.
	ancient := testKeys(t)
	ancient.SetClock(func() time.Time { return time.Now().Add(-49 * time.Hour) })
	tok, _ = ancient.Issue("vacuum", "dev-paid", token.IssueOptions{TTL: 50 * time.Hour})
	if a := refresh(tok); a.Status != http.StatusUnauthorized || a.errCode(t) != directory.CodeRefreshLimit {
		t.Fatalf("refresh past max_token_lifetime: %d %s", a.Status, a.Body)
	}
	// Nor is one with too many groups.
	lax := testKeys(t)
	if err := lax.SetLimits(token.Limits{MaxGroups: 1000, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	g := make([]string, 33)
	for i := range g {
		g[i] = fmt.Sprintf("g%d", i)
	}
	tok, _ = lax.Issue("vacuum", "dev-paid", token.IssueOptions{Groups: g})
	if a := refresh(tok); a.Status != http.StatusUnauthorized {
		t.Fatalf("refresh of a token with 33 groups: %d %s", a.Status, a.Body)
	}
	// Registration refuses them too.
	body := `{"service":"vacuum","device":"dev-9","groups":["` + strings.Join(g, `","`) + `"]}`
	if a := negotiate(t, base, regSecrets["vacuum"], body); a.Status != http.StatusBadRequest {
		t.Fatalf("registration with 33 groups: %d %s", a.Status, a.Body)
	}
}

// A revocation recorded through the admin API is announced on NATS, and the
// directory refuses to refresh the tokens it denies.
func TestRevocationAdminAPI(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	announced, err := nc.SubscribeSync(bus.MustSubjects("").Revocations())
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	st := store.NewMemory()
	seedMap(t, st)
	d := startDir(t, st, nc, nil)
	ac, err := directory.NewAdminClient(d.URL(), adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := testKeys(t)
	tok, _ := keys.Issue("vacuum", "dev-paid", token.IssueOptions{ID: "tok-1"})
	if a := negotiate(t, d.URL(), tok, ""); a.Status != http.StatusOK {
		t.Fatalf("refresh before: %d %s", a.Status, a.Body)
	}
	r, err := ac.Revoke(t.Context(), directory.RevokeSpec{Token: tok})
	if err != nil || r.TokenID != "tok-1" || r.Service != "vacuum" || r.Until.IsZero() {
		t.Fatalf("revoke by token: %+v, %v", r, err)
	}
	m, err := announced.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := bus.ParseRevocation(m.Data); err != nil || got.TokenID != "tok-1" {
		t.Fatalf("announced %s (%v)", m.Data, err)
	}
	if a := negotiate(t, d.URL(), tok, ""); a.Status != http.StatusUnauthorized || a.errCode(t) != directory.CodeRevoked {
		t.Fatalf("refresh of a revoked token: %d %s", a.Status, a.Body)
	}
	// A device: every token issued before, refresh included.
	other, _ := keys.Issue("vacuum", "dev-free", token.IssueOptions{})
	if _, err := ac.Revoke(t.Context(), directory.RevokeSpec{Service: "vacuum", Device: "dev-free", NotBefore: time.Now().Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if a := negotiate(t, d.URL(), other, ""); a.Status != http.StatusUnauthorized {
		t.Fatalf("refresh of a revoked device's token: %d %s", a.Status, a.Body)
	}
	rs, err := ac.Revocations(t.Context())
	if err != nil || len(rs) != 2 {
		t.Fatalf("revocations %+v, %v", rs, err)
	}
	for _, bad := range []directory.RevokeSpec{
		{Service: "vacuum"},
		{Service: "vacuum", Device: "a", TokenID: "b"},
		{Token: "garbage"},
		{Service: "bad.name", Device: "x"},
	} {
		if _, err := ac.Revoke(t.Context(), bad); err == nil {
			t.Errorf("revoke %+v accepted", bad)
		}
	}
}

// Too many failed authentications from one address lock it out of the
// admin API and negotiate (429, Retry-After), even with the right
// credentials; negotiate is rate-limited per address.
func TestLockoutAndNegotiateRate(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st)
	base := startDir(t, st, nil, func(c *directory.Config) {
		c.AuthFailures, c.Lockout = 3, time.Hour
	}).URL()
	admin := func(tok string) answer {
		return get(t, base+"/v1/admin/map", "Authorization", "Bearer "+tok)
	}
	for i := range 3 {
		if a := admin("wrong"); a.Status != http.StatusForbidden {
			t.Fatalf("wrong token %d: %d", i, a.Status)
		}
	}
	if a := admin("wrong"); a.Status != http.StatusForbidden {
		t.Fatalf("the failure that locks out: %d", a.Status)
	}
	a := admin(adminToken)
	if a.Status != http.StatusTooManyRequests || a.errCode(t) != directory.CodeRateLimited || a.Header.Get("Retry-After") == "" {
		t.Fatalf("the right token, locked out: %d %s (Retry-After %q)", a.Status, a.Body, a.Header.Get("Retry-After"))
	}
	if a := negotiate(t, base, regSecrets["vacuum"], `{"service":"vacuum","device":"d1"}`); a.Status != http.StatusTooManyRequests {
		t.Fatalf("negotiate, locked out: %d %s", a.Status, a.Body)
	}
	// Lookups are not affected.
	if a := get(t, base+"/v1/nodes?service=vacuum"); a.Status != http.StatusOK {
		t.Fatalf("lookup while locked out: %d", a.Status)
	}

	// Negotiate: a burst of 5, then one per 100s.
	base = startDir(t, st, nil, func(c *directory.Config) { c.NegotiateRate, c.NegotiateBurst = 0.01, 5 }).URL()
	for i := range 5 {
		if a := negotiate(t, base, regSecrets["vacuum"], `{"service":"vacuum","device":"d1"}`); a.Status != http.StatusOK {
			t.Fatalf("negotiate %d within the burst: %d %s", i, a.Status, a.Body)
		}
	}
	if a := negotiate(t, base, regSecrets["vacuum"], `{"service":"vacuum","device":"d1"}`); a.Status != http.StatusTooManyRequests {
		t.Fatalf("negotiate over the rate: %d %s", a.Status, a.Body)
	}
	// Behind a trusted proxy, each client counts for itself.
	base = startDir(t, st, nil, func(c *directory.Config) {
		c.NegotiateRate, c.NegotiateBurst = 0.01, 1
		c.TrustedProxies = []string{"127.0.0.0/8"}
	}).URL()
	for _, client := range []string{"203.0.113.7", "203.0.113.8"} {
		if a := do(t, http.MethodPost, base+"/v1/negotiate", `{"service":"vacuum","device":"d1"}`,
			"Authorization", "Bearer "+regSecrets["vacuum"], "X-Forwarded-For", "198.51.100.1, "+client); a.Status != http.StatusOK {
			t.Fatalf("client %s behind the proxy: %d", client, a.Status)
		}
	}
	if a := do(t, http.MethodPost, base+"/v1/negotiate", `{"service":"vacuum","device":"d1"}`,
		"Authorization", "Bearer "+regSecrets["vacuum"], "X-Forwarded-For", "203.0.113.7"); a.Status != http.StatusTooManyRequests {
		t.Fatalf("the same client again: %d", a.Status)
	}
}

// Registration secrets and the admin token rotate without downtime: the
// previous one is accepted beside the current one.
func TestSecretRotation(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st)
	base := startDir(t, st, nil, func(c *directory.Config) {
		c.PreviousRegistrationSecrets = map[string]string{"vacuum": "the-previous-vacuum-secret"}
		c.PreviousAdminToken = "the-previous-admin-token"
	}).URL()
	for _, secret := range []string{regSecrets["vacuum"], "the-previous-vacuum-secret"} {
		if a := negotiate(t, base, secret, `{"service":"vacuum","device":"d1"}`); a.Status != http.StatusOK {
			t.Fatalf("negotiate with %q: %d %s", secret, a.Status, a.Body)
		}
	}
	if a := negotiate(t, base, "not-a-vacuum-secret-at-all", `{"service":"vacuum","device":"d1"}`); a.Status != http.StatusUnauthorized {
		t.Fatalf("a wrong secret: %d", a.Status)
	}
	for _, tok := range []string{adminToken, "the-previous-admin-token"} {
		if a := get(t, base+"/v1/admin/map", "Authorization", "Bearer "+tok); a.Status != http.StatusOK {
			t.Fatalf("admin with %q: %d", tok, a.Status)
		}
	}
}

// The directory answers 431 to an oversized request head and closes, and
// serves HTTPS with the admin API and metrics on their own listener.
func TestHTTPHardening(t *testing.T) {
	st := store.NewMemory()
	seedMap(t, st)
	ca := certstest.NewCA(t, "dir")
	pair := ca.Server("directory", "127.0.0.1")
	d := startDir(t, st, nil, func(c *directory.Config) {
		c.TLS = directory.TLSConfig{CertFile: pair.CertFile, KeyFile: pair.KeyFile}
		c.AdminListen = "127.0.0.1:0"
	})
	if !strings.HasPrefix(d.URL(), "https://") || d.AdminURL() == d.URL() {
		t.Fatalf("URL %s, admin URL %s", d.URL(), d.AdminURL())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	get := func(url string, hdr ...string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	auth := []string{"Authorization", "Bearer " + adminToken}
	for _, tc := range []struct {
		url  string
		hdr  []string
		want int
	}{
		{d.URL() + "/v1/nodes?service=vacuum", nil, 200},
		{d.URL() + "/v1/admin/map", auth, 404},
		{d.URL() + "/metrics", nil, 404},
		{d.AdminURL() + "/v1/admin/map", auth, 200},
		{d.AdminURL() + "/metrics", nil, 200},
		{d.AdminURL() + "/v1/nodes?service=vacuum", nil, 404},
		{d.AdminURL() + "/healthz", nil, 200},
	} {
		if got := get(tc.url, tc.hdr...); got != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.url, got, tc.want)
		}
	}

	// An oversized head, over plain HTTP.
	plain := startDir(t, st, nil, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(plain.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, _ = io.WriteString(conn, "GET /v1/nodes?service=vacuum HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 1<<20)+"\r\n\r\n")
	}()
	b, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(b), "HTTP/1.1 431") {
		t.Fatalf("answer to a 1 MiB header: %.80q", b)
	}
}
