package token_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tetherhq/tether/token"
)

const (
	vacuumSecret = "vacuum-secret-0123456789abcdef-0123"
	airconSecret = "aircon-secret-0123456789abcdef-0123"
)

var t0 = time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)

func keyring(t testing.TB, services map[string][]token.Key) *token.Keyring {
	t.Helper()
	kr, err := token.NewKeyring(services)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	kr.SetClock(func() time.Time { return t0 })
	return kr
}

func hmacRing(t testing.TB) *token.Keyring {
	return keyring(t, map[string][]token.Key{
		"vacuum": {{ID: "vacuum-1", HMACSecret: vacuumSecret}},
		"aircon": {{HMACSecret: airconSecret}}, // kid defaults to "aircon"
	})
}

// edKey returns a fresh Ed25519 key pair.
func edKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// sign makes a token the way another issuer (or an attacker) would.
func sign(t testing.TB, m jwt.SigningMethod, kid string, claims jwt.MapClaims, key any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(svc, sub string) jwt.MapClaims {
	return jwt.MapClaims{"svc": svc, "sub": sub, "exp": t0.Add(time.Hour).Unix()}
}

var sentinels = []error{token.ErrMalformed, token.ErrSignature, token.ErrExpired, token.ErrNotYetValid, token.ErrUnknownKey, token.ErrClaims, token.ErrTooLarge}

// wantErr checks that err wraps want and no other Verify sentinel.
func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Fatalf("error %v wraps both %v and %v", err, want, s)
		}
	}
}

func TestIssueVerifyHMAC(t *testing.T) {
	kr := hmacRing(t)
	raw, err := kr.Issue("vacuum", "vac-001", token.IssueOptions{Tier: "paid", Groups: []string{"floor-1", "floor-2"}, TTL: time.Hour, ID: "j-1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := kr.Verify(raw)
	if err != nil {
		t.Fatal(err)
	}
	if c.Service != "vacuum" || c.Device() != "vac-001" || c.Tier != "paid" || !reflect.DeepEqual(c.Groups, []string{"floor-1", "floor-2"}) || c.ID != "j-1" {
		t.Fatalf("claims = %+v", c)
	}
	if !c.ExpiresAt.Equal(t0.Add(time.Hour)) || !c.IssuedAt.Equal(t0) {
		t.Fatalf("exp %v iat %v", c.ExpiresAt, c.IssuedAt)
	}
	h := header(t, raw)
	if h["alg"] != "HS256" || h["kid"] != "vacuum-1" {
		t.Fatalf("header %v", h)
	}

	// The kid defaults to the service name; the TTL to a day.
	raw, err = kr.Issue("aircon", "ac-1", token.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := header(t, raw); h["kid"] != "aircon" {
		t.Fatalf("header %v", h)
	}
	c, err = kr.Verify(raw)
	if err != nil || !c.ExpiresAt.Equal(t0.Add(token.DefaultTTL)) || c.Tier != "" || c.Groups != nil {
		t.Fatalf("claims %+v, %v", c, err)
	}
}

func header(t testing.TB, raw string) map[string]any {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Header
}

func TestIssueVerifyEd25519(t *testing.T) {
	pub, priv := edKey(t)
	seed := base64.StdEncoding.EncodeToString(priv.Seed())
	for name, k := range map[string]token.Key{
		"seed":                {ID: "tv-ed", Ed25519Private: seed},
		"private, URL base64": {ID: "tv-ed", Ed25519Private: base64.URLEncoding.EncodeToString(priv)},
		"private, raw base64": {ID: "tv-ed", Ed25519Private: base64.RawStdEncoding.EncodeToString(priv)},
		"seed and public":     {ID: "tv-ed", Ed25519Private: seed, Ed25519Public: base64.StdEncoding.EncodeToString(pub)},
	} {
		t.Run(name, func(t *testing.T) {
			issuer := keyring(t, map[string][]token.Key{"tv": {k}})
			raw, err := issuer.Issue("tv", "tv-1", token.IssueOptions{Groups: []string{"living"}})
			if err != nil {
				t.Fatal(err)
			}
			if h := header(t, raw); h["alg"] != "EdDSA" || h["kid"] != "tv-ed" {
				t.Fatalf("header %v", h)
			}
			// Nodes hold only the public key.
			verifier := keyring(t, map[string][]token.Key{"tv": {{ID: "tv-ed", Ed25519Public: base64.RawURLEncoding.EncodeToString(pub)}}})
			for _, kr := range []*token.Keyring{issuer, verifier} {
				c, err := kr.Verify(raw)
				if err != nil || c.Service != "tv" || c.Device() != "tv-1" || c.Groups[0] != "living" {
					t.Fatalf("Verify: %+v, %v", c, err)
				}
			}
			// ... and cannot issue.
			if _, err := verifier.Issue("tv", "tv-1", token.IssueOptions{}); !errors.Is(err, token.ErrNoSigner) {
				t.Fatalf("Issue with a public key only: %v", err)
			}
			// Another key pair does not verify it.
			other, _ := edKey(t)
			stranger := keyring(t, map[string][]token.Key{"tv": {{ID: "tv-ed", Ed25519Public: base64.StdEncoding.EncodeToString(other)}}})
			_, err = stranger.Verify(raw)
			wantErr(t, err, token.ErrSignature)
		})
	}
}

func TestExpiryAndNotBefore(t *testing.T) {
	kr := hmacRing(t)
	raw, err := kr.Issue("vacuum", "vac-1", token.IssueOptions{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Time
		want error
	}{
		{t0.Add(time.Minute), nil},
		{t0.Add(time.Minute + 4*time.Second), nil}, // within the 5s leeway
		{t0.Add(time.Minute + 6*time.Second), token.ErrExpired},
		{t0.Add(24 * time.Hour), token.ErrExpired},
	} {
		kr.SetClock(func() time.Time { return tc.at })
		_, err := kr.Verify(raw)
		if tc.want == nil && err != nil {
			t.Fatalf("at %v: %v", tc.at, err)
		}
		if tc.want != nil {
			wantErr(t, err, tc.want)
		}
	}

	kr.SetClock(func() time.Time { return t0 })
	c := claims("vacuum", "vac-1")
	c["nbf"] = t0.Add(time.Minute).Unix()
	_, err = kr.Verify(sign(t, jwt.SigningMethodHS256, "vacuum-1", c, []byte(vacuumSecret)))
	wantErr(t, err, token.ErrNotYetValid)
	c["nbf"] = t0.Add(3 * time.Second).Unix() // within the leeway
	if _, err := kr.Verify(sign(t, jwt.SigningMethodHS256, "vacuum-1", c, []byte(vacuumSecret))); err != nil {
		t.Fatal(err)
	}

	// An expired token with a bad signature is a bad signature.
	kr.SetClock(func() time.Time { return t0.Add(time.Hour) })
	_, err = kr.Verify(raw[:len(raw)-4] + "AAAA")
	wantErr(t, err, token.ErrSignature)
}

func TestWrongKeys(t *testing.T) {
	kr := hmacRing(t)
	for _, tc := range []struct {
		name string
		raw  string
		want error
	}{
		{"vacuum's key claiming aircon", sign(t, jwt.SigningMethodHS256, "vacuum-1", claims("aircon", "d"), []byte(vacuumSecret)), token.ErrSignature},
		{"vacuum's key claiming no service", sign(t, jwt.SigningMethodHS256, "vacuum-1", claims("", "d"), []byte(vacuumSecret)), token.ErrSignature},
		{"no kid, vacuum's secret, claims aircon", sign(t, jwt.SigningMethodHS256, "", claims("aircon", "d"), []byte(vacuumSecret)), token.ErrSignature},
		{"aircon's kid, vacuum's secret", sign(t, jwt.SigningMethodHS256, "aircon", claims("aircon", "d"), []byte(vacuumSecret)), token.ErrSignature},
		{"unknown kid", sign(t, jwt.SigningMethodHS256, "tv-1", claims("vacuum", "d"), []byte(vacuumSecret)), token.ErrUnknownKey},
		{"no kid, unknown service", sign(t, jwt.SigningMethodHS256, "", claims("tv", "d"), []byte(vacuumSecret)), token.ErrUnknownKey},
		{"HS512", sign(t, jwt.SigningMethodHS512, "vacuum-1", claims("vacuum", "d"), []byte(vacuumSecret)), token.ErrSignature},
		{"EdDSA token for an HMAC key", sign(t, jwt.SigningMethodEdDSA, "vacuum-1", claims("vacuum", "d"), func() ed25519.PrivateKey { _, p := edKey(t); return p }()), token.ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kr.Verify(tc.raw)
			if c != nil {
				t.Fatalf("accepted: %+v", c)
			}
			wantErr(t, err, tc.want)
		})
	}

	// Without kid, the right key of the claimed service is found.
	c, err := kr.Verify(sign(t, jwt.SigningMethodHS256, "", claims("aircon", "ac-1"), []byte(airconSecret)))
	if err != nil || c.Service != "aircon" {
		t.Fatalf("no kid: %+v, %v", c, err)
	}
}

// TestAlgConfusion: a token that names an Ed25519 key but is HS256-signed
// with that key's public bytes (which are no secret) must not verify.
func TestAlgConfusion(t *testing.T) {
	pub, _ := edKey(t)
	b64 := base64.StdEncoding.EncodeToString(pub)
	kr := keyring(t, map[string][]token.Key{"tv": {{ID: "tv-ed", Ed25519Public: b64}}})
	for _, secret := range [][]byte{[]byte(b64), []byte(base64.RawURLEncoding.EncodeToString(pub)), pub} {
		for _, kid := range []string{"tv-ed", ""} {
			c, err := kr.Verify(sign(t, jwt.SigningMethodHS256, kid, claims("tv", "tv-1"), secret))
			if c != nil {
				t.Fatalf("HS256 with the public key as secret (kid %q) accepted: %+v", kid, c)
			}
			wantErr(t, err, token.ErrUnknownKey)
		}
	}
}

func TestAlgNone(t *testing.T) {
	kr := hmacRing(t)
	for _, kid := range []string{"vacuum-1", ""} {
		raw := sign(t, jwt.SigningMethodNone, kid, claims("vacuum", "vac-1"), jwt.UnsafeAllowNoneSignatureType)
		c, err := kr.Verify(raw)
		if c != nil {
			t.Fatalf("alg none accepted: %+v", c)
		}
		wantErr(t, err, token.ErrSignature)
	}
	// A hand-made one with the HMAC of an HS256 token pasted on.
	good, _ := kr.Issue("vacuum", "vac-1", token.IssueOptions{})
	parts := strings.Split(good, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"vacuum-1"}`))
	if _, err := kr.Verify(none + "." + parts[1] + "." + parts[2]); err == nil {
		t.Fatal("alg none with a pasted signature accepted")
	}
}

func TestKeyRotation(t *testing.T) {
	oldKey := token.Key{ID: "vacuum-2025", HMACSecret: "old-vacuum-secret-0123456789abcdef"}
	newKey := token.Key{ID: "vacuum-2026", HMACSecret: vacuumSecret}
	before := keyring(t, map[string][]token.Key{"vacuum": {oldKey}})
	during := keyring(t, map[string][]token.Key{"vacuum": {newKey, oldKey}})
	after := keyring(t, map[string][]token.Key{"vacuum": {newKey}})

	oldTok, _ := before.Issue("vacuum", "vac-1", token.IssueOptions{})
	newTok, err := during.Issue("vacuum", "vac-1", token.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := header(t, newTok); h["kid"] != "vacuum-2026" {
		t.Fatalf("the first key signs: header %v", h)
	}
	for _, raw := range []string{oldTok, newTok} {
		if _, err := during.Verify(raw); err != nil {
			t.Fatalf("during rotation: %v", err)
		}
	}
	// Without kid, every key of the service is tried.
	noKid := sign(t, jwt.SigningMethodHS256, "", claims("vacuum", "vac-1"), []byte(oldKey.HMACSecret))
	if _, err := during.Verify(noKid); err != nil {
		t.Fatalf("no kid, second key: %v", err)
	}
	_, err = after.Verify(oldTok)
	wantErr(t, err, token.ErrUnknownKey)
	_, err = after.Verify(noKid)
	wantErr(t, err, token.ErrSignature)
}

func TestBadClaims(t *testing.T) {
	kr := hmacRing(t)
	for name, c := range map[string]jwt.MapClaims{
		"sub missing":    {"svc": "vacuum", "exp": t0.Add(time.Hour).Unix()},
		"sub with a dot": {"svc": "vacuum", "sub": "a.b", "exp": t0.Add(time.Hour).Unix()},
		"sub wildcard":   {"svc": "vacuum", "sub": ">", "exp": t0.Add(time.Hour).Unix()},
		"sub too long":   {"svc": "vacuum", "sub": strings.Repeat("a", 129), "exp": t0.Add(time.Hour).Unix()},
		"bad tier":       {"svc": "vacuum", "sub": "d", "tier": "paid tier", "exp": t0.Add(time.Hour).Unix()},
		"bad group":      {"svc": "vacuum", "sub": "d", "grp": []string{"ok", "*"}, "exp": t0.Add(time.Hour).Unix()},
		"empty group":    {"svc": "vacuum", "sub": "d", "grp": []string{""}, "exp": t0.Add(time.Hour).Unix()},
		"no exp":         {"svc": "vacuum", "sub": "d"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := kr.Verify(sign(t, jwt.SigningMethodHS256, "vacuum-1", c, []byte(vacuumSecret)))
			if c != nil {
				t.Fatalf("accepted %+v", c)
			}
			wantErr(t, err, token.ErrClaims)
		})
	}
	for name, c := range map[string]jwt.MapClaims{
		"exp not a number": {"svc": "vacuum", "sub": "d", "exp": "tomorrow"},
		"grp not a list":   {"svc": "vacuum", "sub": "d", "grp": "g", "exp": t0.Add(time.Hour).Unix()},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := kr.Verify(sign(t, jwt.SigningMethodHS256, "vacuum-1", c, []byte(vacuumSecret)))
			wantErr(t, err, token.ErrMalformed)
		})
	}
}

func TestMalformed(t *testing.T) {
	kr := hmacRing(t)
	good, _ := kr.Issue("vacuum", "vac-1", token.IssueOptions{})
	for _, raw := range []string{"", "x", "a.b", "a.b.c", "a.b.c.d", "...", good + ".x", "Bearer " + good, " " + good} {
		c, err := kr.Verify(raw)
		if c != nil {
			t.Fatalf("Verify(%q) accepted %+v", raw, c)
		}
		wantErr(t, err, token.ErrMalformed)
	}
}

// TestSignatureNotMalleable pins a fix: base64 decoding was lenient, so a
// token whose signature had its last character's unused low bits changed,
// or a line break inserted, still verified: the same token had many
// spellings.
func TestSignatureNotMalleable(t *testing.T) {
	pub, priv := edKey(t)
	kr := keyring(t, map[string][]token.Key{
		"vacuum": {{ID: "vacuum-1", HMACSecret: vacuumSecret}},
		"tv":     {{ID: "tv-ed", Ed25519Private: base64.StdEncoding.EncodeToString(priv.Seed()), Ed25519Public: base64.StdEncoding.EncodeToString(pub)}},
	})
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for _, svc := range []string{"vacuum", "tv"} {
		raw, err := kr.Issue(svc, "d-1", token.IssueOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last := strings.IndexByte(alphabet, raw[len(raw)-1])
		var variants []string
		for bits := 1; bits < 4; bits++ { // HS256 has 2 unused bits, Ed25519 4
			variants = append(variants, raw[:len(raw)-1]+string(alphabet[last^bits]))
		}
		dot := strings.LastIndexByte(raw, '.')
		variants = append(variants,
			raw[:dot+5]+"\n"+raw[dot+5:],
			raw[:dot+5]+"\r\n"+raw[dot+5:],
			raw+"\n",
			raw+"=",
		)
		for _, v := range variants {
			if c, err := kr.Verify(v); err == nil {
				t.Fatalf("%s: a respelled token %q of %q verified: %+v", svc, v, raw, c)
			}
		}
	}
}

func TestIssueRefuses(t *testing.T) {
	kr := hmacRing(t)
	for _, tc := range []struct {
		service, device string
		o               token.IssueOptions
		want            string
	}{
		{"tv", "d", token.IssueOptions{}, "no signing key"},
		{"vacuum", "", token.IssueOptions{}, "device"},
		{"vacuum", "a.b", token.IssueOptions{}, "device"},
		{"vacuum", "d", token.IssueOptions{Tier: "a b"}, "tier"},
		{"vacuum", "d", token.IssueOptions{Groups: []string{"g", "x.>"}}, "group"},
	} {
		raw, err := kr.Issue(tc.service, tc.device, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Issue(%q, %q, %+v) = %q, %v; want an error about %s", tc.service, tc.device, tc.o, raw, err, tc.want)
		}
	}
	if _, err := kr.Issue("tv", "d", token.IssueOptions{}); !errors.Is(err, token.ErrNoSigner) {
		t.Errorf("unknown service: %v", err)
	}
}

func TestNewKeyring(t *testing.T) {
	pub, priv := edKey(t)
	other, _ := edKey(t)
	b64 := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name     string
		services map[string][]token.Key
		want     string // "" means valid
	}{
		{"empty", nil, ""},
		{"two services", map[string][]token.Key{"a": {{HMACSecret: vacuumSecret}}, "b": {{ID: "b-ed", Ed25519Public: b64(pub)}}}, ""},
		{"shortest secret", map[string][]token.Key{"a": {{HMACSecret: strings.Repeat("s", token.MinHMACSecret)}}}, ""},
		{"short secret", map[string][]token.Key{"a": {{ID: "a1", HMACSecret: vacuumSecret}, {ID: "a2", HMACSecret: strings.Repeat("s", token.MinHMACSecret-1)}}},
			"services.a.keys[1]: hmac_secret: 31 bytes"},
		{"no key material", map[string][]token.Key{"a": {{ID: "a1"}}}, "services.a.keys[0]: set exactly one"},
		{"HMAC and Ed25519", map[string][]token.Key{"a": {{HMACSecret: vacuumSecret, Ed25519Public: b64(pub)}}}, "services.a.keys[0]: set exactly one"},
		{"duplicate default kid", map[string][]token.Key{"a": {{HMACSecret: vacuumSecret}, {HMACSecret: airconSecret}}}, `services.a.keys[1]: key id "a" used twice`},
		{"kid shared by two services", map[string][]token.Key{"a": {{ID: "k", HMACSecret: vacuumSecret}}, "b": {{ID: "k", HMACSecret: airconSecret}}}, `services.b.keys[0]: key id "k" used twice`},
		{"kid equal to another service's default", map[string][]token.Key{"a": {{ID: "b", HMACSecret: vacuumSecret}}, "b": {{HMACSecret: airconSecret}}}, `services.b.keys[0]: key id "b" used twice`},
		{"bad base64", map[string][]token.Key{"a": {{Ed25519Public: "not base64!"}}}, "services.a.keys[0]: ed25519_public: not base64"},
		{"short public", map[string][]token.Key{"a": {{Ed25519Public: b64(pub[:16])}}}, "services.a.keys[0]: ed25519_public: 16 bytes"},
		{"bad private size", map[string][]token.Key{"a": {{Ed25519Private: b64(priv[:40])}}}, "services.a.keys[0]: ed25519_private: 40 bytes"},
		{"bad private base64", map[string][]token.Key{"a": {{Ed25519Private: "%%%"}}}, "services.a.keys[0]: ed25519_private: not base64"},
		{"public not matching private", map[string][]token.Key{"a": {{Ed25519Private: b64(priv.Seed()), Ed25519Public: b64(other)}}}, "services.a.keys[0]: ed25519_public does not match"},
		{"bad service name", map[string][]token.Key{"a.b": {{HMACSecret: vacuumSecret}}}, "services.a.b:"},
		{"empty service name", map[string][]token.Key{"": {{HMACSecret: vacuumSecret}}}, "services.:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr, err := token.NewKeyring(tc.services)
			if tc.want == "" {
				if err != nil || kr == nil {
					t.Fatalf("NewKeyring: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("NewKeyring = %v, want %q...", err, tc.want)
			}
		})
	}

	kr := keyring(t, map[string][]token.Key{"vacuum": {{HMACSecret: vacuumSecret}}, "aircon": {{HMACSecret: airconSecret}}, "none": nil})
	if got := kr.Services(); !reflect.DeepEqual(got, []string{"aircon", "vacuum"}) {
		t.Fatalf("Services() = %v", got)
	}
	if !kr.HasService("vacuum") || kr.HasService("none") || kr.HasService("tv") {
		t.Fatal("HasService")
	}
}

func TestConcurrentVerify(t *testing.T) {
	kr := hmacRing(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				dev := fmt.Sprintf("d-%d-%d", g, i)
				raw, err := kr.Issue("vacuum", dev, token.IssueOptions{})
				if err == nil {
					var c *token.Claims
					if c, err = kr.Verify(raw); err == nil && c.Device() != dev {
						err = fmt.Errorf("device %q, want %q", c.Device(), dev)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// FuzzVerifyToken: Verify never panics on any input, and never accepts a
// token other than the ones the keyring issued (nothing can forge or
// respell one), in particular a valid token with one byte changed.
func FuzzVerifyToken(f *testing.F) {
	pub, priv := edKey(f)
	kr := keyring(f, map[string][]token.Key{
		"vacuum": {{ID: "vacuum-1", HMACSecret: vacuumSecret}},
		"tv":     {{ID: "tv-ed", Ed25519Private: base64.StdEncoding.EncodeToString(priv), Ed25519Public: base64.StdEncoding.EncodeToString(pub)}},
	})
	var valid []string
	for _, svc := range []string{"vacuum", "tv"} {
		// A fixed ID: every fuzzing process must issue the same tokens.
		raw, err := kr.Issue(svc, "dev-1", token.IssueOptions{Tier: "paid", Groups: []string{"g"}, ID: "fuzz-" + svc})
		if err != nil {
			f.Fatal(err)
		}
		valid = append(valid, raw)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for _, raw := range valid {
		f.Add(raw, uint(len(raw)-1), byte('A'))
		f.Add(raw, uint(strings.IndexByte(raw, '.')), byte('.'))
		// The respellings lenient base64 allowed: a line break in the
		// signature, unused low bits of its last character set.
		f.Add(raw, uint(len(raw)-3), byte('\n'))
		f.Add(raw, uint(len(raw)-1), alphabet[strings.IndexByte(alphabet, raw[len(raw)-1])^1])
	}
	f.Add("eyJhbGciOiJub25lIn0.eyJzdmMiOiJ2YWN1dW0ifQ.", uint(0), byte(0))
	f.Add("", uint(0), byte('\n'))
	f.Fuzz(func(t *testing.T, raw string, pos uint, b byte) {
		if c, err := kr.Verify(raw); err == nil {
			found := false
			for _, v := range valid {
				found = found || raw == v
			}
			if !found {
				t.Fatalf("Verify accepted a token it never issued: %q (%+v)", raw, c)
			}
		}
		for _, v := range valid {
			m := []byte(v)
			m[pos%uint(len(m))] = b
			if string(m) == v {
				continue
			}
			if c, err := kr.Verify(string(m)); err == nil {
				t.Fatalf("Verify accepted %q, a mutation of %q: %+v", m, v, c)
			}
			ins := v[:pos%uint(len(v))] + string(b) + v[pos%uint(len(v)):]
			if c, err := kr.Verify(ins); err == nil {
				t.Fatalf("Verify accepted %q, %q with a byte inserted: %+v", ins, v, c)
			}
		}
	})
}
