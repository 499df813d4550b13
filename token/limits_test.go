package token_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/token"
)

func groups(n int) []string {
	g := make([]string, n)
	for i := range g {
		g[i] = fmt.Sprintf("g%d", i)
	}
	return g
}

// Tokens over the limits are neither issued nor accepted, however well
// signed.
func TestLimits(t *testing.T) {
	kr := hmacRing(t)
	if l := kr.Limits(); l.MaxGroups != token.DefaultMaxGroups || l.MaxBytes != token.DefaultMaxBytes {
		t.Fatalf("default limits %+v", l)
	}
	if _, err := kr.Issue("vacuum", "d", token.IssueOptions{Groups: groups(33)}); !errors.Is(err, token.ErrTooLarge) {
		t.Fatalf("issue 33 groups: %v", err)
	}
	if _, err := kr.Issue("vacuum", "d", token.IssueOptions{Groups: groups(32)}); err != nil {
		t.Fatalf("issue 32 groups: %v", err)
	}
	long := make([]string, 30)
	for i := range long {
		long[i] = fmt.Sprintf("%0128d", i)
	}
	if _, err := kr.Issue("vacuum", "d", token.IssueOptions{Groups: long}); !errors.Is(err, token.ErrTooLarge) {
		t.Fatalf("issue a token over 4 KiB: %v", err)
	}
	// Signed anyway, by an issuer with other limits.
	lax := hmacRing(t)
	if err := lax.SetLimits(token.Limits{MaxGroups: 1 << 20, MaxBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string][]string{"33 groups": groups(33), "over 4 KiB": long, "50,000 groups": groups(50_000)} {
		raw, err := lax.Issue("vacuum", "d", token.IssueOptions{Groups: g})
		if err != nil {
			t.Fatal(err)
		}
		_, err = kr.Verify(raw)
		wantErr(t, err, token.ErrTooLarge)
		t.Logf("%s: %d bytes: %v", name, len(raw), err)
	}
	if err := kr.SetLimits(token.Limits{MaxBytes: 100}); err == nil || !strings.Contains(err.Error(), "tokens.max_bytes") {
		t.Fatalf("SetLimits with a tiny max_bytes: %v", err)
	}
}

// Every token gets a random jti unless given one; auth_time and NotAfter
// carry a refresh chain.
func TestIssueIDAndChain(t *testing.T) {
	kr := hmacRing(t)
	a, _ := kr.Issue("vacuum", "d", token.IssueOptions{})
	b, _ := kr.Issue("vacuum", "d", token.IssueOptions{})
	ca, _ := kr.Verify(a)
	cb, _ := kr.Verify(b)
	if ca.ID == "" || ca.ID == cb.ID || protocol.ValidName(ca.ID) != nil {
		t.Fatalf("jti %q and %q: want distinct valid names", ca.ID, cb.ID)
	}
	if _, err := kr.Issue("vacuum", "d", token.IssueOptions{ID: "a.b"}); err == nil {
		t.Fatal("an invalid ID was accepted")
	}
	if !ca.FirstIssued().Equal(t0) || ca.AuthTime != nil {
		t.Fatalf("a first token: FirstIssued %v, auth_time %v", ca.FirstIssued(), ca.AuthTime)
	}
	first := t0.Add(-48 * time.Hour)
	r, _ := kr.Issue("vacuum", "d", token.IssueOptions{FirstIssued: first, NotAfter: t0.Add(time.Hour), TTL: 24 * time.Hour})
	cr, err := kr.Verify(r)
	if err != nil {
		t.Fatal(err)
	}
	if !cr.FirstIssued().Equal(first) || !cr.ExpiresAt.Equal(t0.Add(time.Hour)) || !cr.IssuedAt.Equal(t0) {
		t.Fatalf("a refreshed token: first %v exp %v iat %v", cr.FirstIssued(), cr.ExpiresAt, cr.IssuedAt)
	}
}

func TestRevocations(t *testing.T) {
	s := token.NewRevocations()
	mk := func(svc, dev, id string, first time.Time) *token.Claims {
		return &token.Claims{Service: svc, RegisteredClaims: jwt.RegisteredClaims{Subject: dev, ID: id, IssuedAt: jwt.NewNumericDate(first)}}
	}
	before, at := t0.Add(-time.Minute), t0
	if err := s.Check(mk("vacuum", "d1", "j1", before)); err != nil {
		t.Fatalf("empty set: %v", err)
	}
	if !s.Add(token.Revocation{Service: "vacuum", Device: "d1", NotBefore: t0.Add(500 * time.Millisecond), Until: t0.Add(time.Hour)}) {
		t.Fatal("Add reported no change")
	}
	s.Add(token.Revocation{Service: "vacuum", TokenID: "j9", Until: t0.Add(time.Hour)})
	for _, tc := range []struct {
		name    string
		c       *token.Claims
		revoked bool
	}{
		{"device, older token", mk("vacuum", "d1", "j1", before), true},
		{"device, token of the same second", mk("vacuum", "d1", "j1", at), true},
		{"device, token of the next second", mk("vacuum", "d1", "j1", t0.Add(time.Second)), false},
		{"device, later token", mk("vacuum", "d1", "j1", t0.Add(2*time.Second)), false},
		{"device, no iat", &token.Claims{Service: "vacuum", RegisteredClaims: jwt.RegisteredClaims{Subject: "d1"}}, true},
		{"device, refreshed from an older chain", &token.Claims{Service: "vacuum", AuthTime: jwt.NewNumericDate(before),
			RegisteredClaims: jwt.RegisteredClaims{Subject: "d1", IssuedAt: jwt.NewNumericDate(t0.Add(time.Hour))}}, true},
		{"same device name, other service", mk("aircon", "d1", "j1", before), false},
		{"token ID", mk("vacuum", "d2", "j9", t0.Add(time.Hour)), true},
		{"token ID of another service", mk("aircon", "d2", "j9", before), false},
	} {
		err := s.Check(tc.c)
		if (err != nil) != tc.revoked || (err != nil && !errors.Is(err, token.ErrRevoked)) {
			t.Errorf("%s: %v, revoked %v", tc.name, err, tc.revoked)
		}
	}
	// The later not-before wins; an earlier one changes nothing.
	if s.Add(token.Revocation{Service: "vacuum", Device: "d1", NotBefore: before, Until: t0.Add(time.Hour)}) {
		t.Fatal("an earlier not-before replaced a later one")
	}
	s.Forget(t0.Add(2 * time.Hour))
	if s.Len() != 0 {
		t.Fatalf("%d revocations past their until", s.Len())
	}
}

// FuzzVerifyClaims: whatever claims a holder of the key signs, Verify
// never panics, and what it accepts is within the limits: a valid device,
// tier and groups, at most max_groups of them, the token at most
// max_bytes, and the key's own service.
func FuzzVerifyClaims(f *testing.F) {
	kr := hmacRing(f)
	for _, c := range []string{
		`{"svc":"vacuum","sub":"d","exp":1795678758}`,
		`{"svc":"vacuum","sub":"d","exp":1795678758,"grp":["a","b"],"tier":"paid","jti":"x","auth_time":1795000000}`,
		`{"svc":"aircon","sub":"d","exp":1795678758}`,
		`{"svc":"vacuum","sub":"d.e","exp":1795678758}`,
		`{"svc":"vacuum","sub":"d","exp":1795678758,"grp":["g0","g1","g2","g3","g4","g5","g6","g7","g8","g9","g10","g11","g12","g13","g14","g15","g16","g17","g18","g19","g20","g21","g22","g23","g24","g25","g26","g27","g28","g29","g30","g31","g32"]}`,
		`{"svc":"vacuum","sub":"d","exp":1e300,"iat":-1}`,
		`{"svc":"vacuum","sub":"d","exp":"soon"}`,
		`[]`,
	} {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var m jwt.MapClaims
		if err := json.Unmarshal(body, &m); err != nil {
			return
		}
		raw := sign(t, jwt.SigningMethodHS256, "vacuum-1", m, []byte(vacuumSecret))
		c, err := kr.Verify(raw)
		if err != nil {
			return
		}
		l := kr.Limits()
		if c.Service != "vacuum" || protocol.ValidName(c.Subject) != nil || len(c.Groups) > l.MaxGroups || len(raw) > l.MaxBytes {
			t.Fatalf("accepted %s: %+v", body, c)
		}
		if c.Tier != "" && protocol.ValidName(c.Tier) != nil {
			t.Fatalf("accepted tier %q", c.Tier)
		}
		for _, g := range c.Groups {
			if protocol.ValidName(g) != nil {
				t.Fatalf("accepted group %q", g)
			}
		}
	})
}
