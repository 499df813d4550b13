// Package token issues and verifies device tokens: JWTs signed with
// per-service keys (HMAC-SHA256 secrets, or Ed25519 so that nodes hold only
// public keys).
//
// A token carries the device ID (sub), the service (svc), an optional tier
// and groups, and an expiry (exp). The JWT header's kid names the key; a key
// belongs to exactly one service and verifies only tokens of that service,
// so a token issued for one service never reaches another's subjects.
//
// Keyring is safe for concurrent use once built.
package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tetherhq/tether/protocol"
)

// Errors returned by Verify and Issue. Verify's errors wrap exactly one of
// ErrMalformed, ErrSignature, ErrExpired, ErrNotYetValid, ErrUnknownKey,
// ErrClaims or ErrTooLarge.
var (
	ErrMalformed   = errors.New("token: malformed")
	ErrSignature   = errors.New("token: signature does not verify")
	ErrExpired     = errors.New("token: expired")
	ErrNotYetValid = errors.New("token: not valid yet")
	ErrUnknownKey  = errors.New("token: no key for this token")
	ErrClaims      = errors.New("token: bad claims")
	ErrNoSigner    = errors.New("token: no signing key for service")
	// ErrTooLarge: the token is longer than Limits.MaxBytes, or has more
	// groups than Limits.MaxGroups.
	ErrTooLarge = errors.New("token: over the limits")
	// ErrRevoked: the token, or its device, is revoked (Revocations.Check).
	ErrRevoked = errors.New("token: revoked")
)

// Claims are the claims of a device token.
type Claims struct {
	// Service (svc) the token is valid for.
	Service string `json:"svc"`
	// Tier (tier), such as "paid" or "free"; optional.
	Tier string `json:"tier,omitempty"`
	// Groups (grp) the connection joins; pushes to these groups reach it.
	Groups []string `json:"grp,omitempty"`
	// AuthTime (auth_time) is when the device first got a token in the
	// chain this one was refreshed from; absent on a first token, whose
	// iat is that time.
	AuthTime *jwt.NumericDate `json:"auth_time,omitempty"`
	jwt.RegisteredClaims
}

// Device is the device ID (the sub claim).
func (c *Claims) Device() string { return c.Subject }

// FirstIssued is when the token's chain began: auth_time when present,
// else iat; zero when the token has neither.
func (c *Claims) FirstIssued() time.Time {
	switch {
	case c.AuthTime != nil:
		return c.AuthTime.Time
	case c.IssuedAt != nil:
		return c.IssuedAt.Time
	}
	return time.Time{}
}

// Key is one signing or verifying key of a service.
type Key struct {
	// ID is the key ID (the JWT kid). Default: the service name.
	ID string `yaml:"id"`
	// HMACSecret, for HS256. At least 32 bytes.
	HMACSecret string `yaml:"hmac_secret"`
	// Ed25519Public is a base64 (standard or URL) Ed25519 public key, for
	// EdDSA tokens; enough to verify.
	Ed25519Public string `yaml:"ed25519_public"`
	// Ed25519Private is a base64 Ed25519 private key (64 bytes) or seed (32
	// bytes); needed only to issue tokens.
	Ed25519Private string `yaml:"ed25519_private"`
}

type key struct {
	id      string
	service string
	hmac    []byte
	pub     ed25519.PublicKey
	priv    ed25519.PrivateKey
}

// Keyring holds the keys of every service. Build it with NewKeyring.
type Keyring struct {
	byID      map[string]*key
	byService map[string][]*key
	leeway    time.Duration
	now       func() time.Time
	limits    Limits
}

// Limits bound the tokens a keyring issues and accepts. A token with many
// groups costs the node a NATS subscription per group and a long welcome;
// a long one costs memory before its signature is even checked. Zero
// values mean the defaults.
type Limits struct {
	// MaxGroups is the most groups (grp) a token may carry. Default 32.
	MaxGroups int `yaml:"max_groups"`
	// MaxBytes is the longest token accepted, in bytes. Default 4096.
	MaxBytes int `yaml:"max_bytes"`
}

// Default limits.
const (
	DefaultMaxGroups = 32
	DefaultMaxBytes  = 4096
)

func (l Limits) withDefaults() Limits {
	if l.MaxGroups <= 0 {
		l.MaxGroups = DefaultMaxGroups
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// Validate checks the limits; errors name the key (tokens.*).
func (l Limits) Validate() error {
	l = l.withDefaults()
	if l.MaxBytes < 512 {
		return fmt.Errorf("tokens.max_bytes: %d is below 512", l.MaxBytes)
	}
	return nil
}

// SetLimits replaces the keyring's limits (the defaults until then). Call
// it before the keyring is shared.
func (kr *Keyring) SetLimits(l Limits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	kr.limits = l.withDefaults()
	return nil
}

// Limits returns the keyring's limits, defaults applied.
func (kr *Keyring) Limits() Limits { return kr.limits }

// MinHMACSecret is the shortest HMAC secret accepted, in bytes.
const MinHMACSecret = 32

// NewKeyring builds a keyring from each service's keys. The first key of a
// service is the one Issue signs with; all of them verify.
func NewKeyring(services map[string][]Key) (*Keyring, error) {
	kr := &Keyring{byID: map[string]*key{}, byService: map[string][]*key{}, leeway: 5 * time.Second, now: time.Now, limits: Limits{}.withDefaults()}
	names := make([]string, 0, len(services))
	for s := range services {
		names = append(names, s)
	}
	slices.Sort(names)
	for _, svc := range names {
		if err := protocol.ValidName(svc); err != nil {
			return nil, fmt.Errorf("services.%s: %w", svc, err)
		}
		for i, k := range services[svc] {
			where := fmt.Sprintf("services.%s.keys[%d]", svc, i)
			pk, err := parseKey(svc, k)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if _, dup := kr.byID[pk.id]; dup {
				return nil, fmt.Errorf("%s: key id %q used twice", where, pk.id)
			}
			kr.byID[pk.id] = pk
			kr.byService[svc] = append(kr.byService[svc], pk)
		}
	}
	return kr, nil
}

func parseKey(svc string, k Key) (*key, error) {
	pk := &key{id: k.ID, service: svc}
	if pk.id == "" {
		pk.id = svc
	}
	n := 0
	if k.HMACSecret != "" {
		n++
		if len(k.HMACSecret) < MinHMACSecret {
			return nil, fmt.Errorf("hmac_secret: %d bytes, at least %d", len(k.HMACSecret), MinHMACSecret)
		}
		pk.hmac = []byte(k.HMACSecret)
	}
	if k.Ed25519Private != "" {
		raw, err := decodeB64(k.Ed25519Private)
		if err != nil {
			return nil, fmt.Errorf("ed25519_private: %w", err)
		}
		switch len(raw) {
		case ed25519.SeedSize:
			pk.priv = ed25519.NewKeyFromSeed(raw)
		case ed25519.PrivateKeySize:
			pk.priv = ed25519.PrivateKey(raw)
		default:
			return nil, fmt.Errorf("ed25519_private: %d bytes, want 32 or 64", len(raw))
		}
		pk.pub = pk.priv.Public().(ed25519.PublicKey)
	}
	if k.Ed25519Public != "" {
		raw, err := decodeB64(k.Ed25519Public)
		if err != nil {
			return nil, fmt.Errorf("ed25519_public: %w", err)
		}
		if len(raw) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519_public: %d bytes, want 32", len(raw))
		}
		if pk.pub != nil && !pk.pub.Equal(ed25519.PublicKey(raw)) {
			return nil, errors.New("ed25519_public does not match ed25519_private")
		}
		pk.pub = raw
	}
	if pk.pub != nil {
		n++
	}
	if n != 1 {
		return nil, errors.New("set exactly one of hmac_secret or an ed25519 key")
	}
	return pk, nil
}

func decodeB64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// Services lists the services the keyring has keys for, sorted.
func (kr *Keyring) Services() []string {
	out := make([]string, 0, len(kr.byService))
	for s := range kr.byService {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// HasService reports whether the keyring has a key for service.
func (kr *Keyring) HasService(service string) bool { return len(kr.byService[service]) > 0 }

// SetClock replaces the clock used for expiry checks and issuing; for tests.
func (kr *Keyring) SetClock(now func() time.Time) { kr.now = now }

// IssueOptions are the optional claims of Issue.
type IssueOptions struct {
	Tier   string
	Groups []string
	// TTL of the token. Default 24h.
	TTL time.Duration
	// ID sets the jti claim, a valid name. Default: 22 random characters,
	// so that every token can be revoked by its ID.
	ID string
	// FirstIssued sets the auth_time claim: when the chain of tokens this
	// one continues began (a refresh keeps its predecessor's). Default:
	// none, the token starts a chain.
	FirstIssued time.Time
	// NotAfter, when set, caps the expiry: exp is the earlier of now+TTL
	// and NotAfter.
	NotAfter time.Time
}

// DefaultTTL is the lifetime of a token issued without a TTL.
const DefaultTTL = 24 * time.Hour

// Issue signs a token for device of service with the service's first key.
func (kr *Keyring) Issue(service, device string, o IssueOptions) (string, error) {
	keys := kr.byService[service]
	if len(keys) == 0 {
		return "", fmt.Errorf("%w %q", ErrNoSigner, service)
	}
	k := keys[0]
	if err := protocol.ValidName(device); err != nil {
		return "", fmt.Errorf("token: device: %w", err)
	}
	if o.Tier != "" {
		if err := protocol.ValidName(o.Tier); err != nil {
			return "", fmt.Errorf("token: tier: %w", err)
		}
	}
	if len(o.Groups) > kr.limits.MaxGroups {
		return "", fmt.Errorf("%w: %d groups, at most %d (tokens.max_groups)", ErrTooLarge, len(o.Groups), kr.limits.MaxGroups)
	}
	for _, g := range o.Groups {
		if err := protocol.ValidName(g); err != nil {
			return "", fmt.Errorf("token: group: %w", err)
		}
	}
	id := o.ID
	if id == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		id = base64.RawURLEncoding.EncodeToString(b[:])
	} else if err := protocol.ValidName(id); err != nil {
		return "", fmt.Errorf("token: id: %w", err)
	}
	ttl := o.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	now := kr.now()
	exp := now.Add(ttl)
	if !o.NotAfter.IsZero() && o.NotAfter.Before(exp) {
		exp = o.NotAfter
	}
	c := Claims{
		Service: service,
		Tier:    o.Tier,
		Groups:  o.Groups,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   device,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        id,
		},
	}
	if !o.FirstIssued.IsZero() {
		c.AuthTime = jwt.NewNumericDate(o.FirstIssued)
	}
	var t *jwt.Token
	var signKey any
	switch {
	case k.hmac != nil:
		t, signKey = jwt.NewWithClaims(jwt.SigningMethodHS256, c), k.hmac
	case k.priv != nil:
		t, signKey = jwt.NewWithClaims(jwt.SigningMethodEdDSA, c), k.priv
	default:
		return "", fmt.Errorf("%w %q: its key %q is public only", ErrNoSigner, service, k.id)
	}
	t.Header["kid"] = k.id
	s, err := t.SignedString(signKey)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	if len(s) > kr.limits.MaxBytes {
		return "", fmt.Errorf("%w: the token would be %d bytes, at most %d (tokens.max_bytes)", ErrTooLarge, len(s), kr.limits.MaxBytes)
	}
	return s, nil
}

// Verify checks a token's signature, expiry and claims and returns its
// claims. The key is chosen by kid, or, without kid, among the keys of the
// service the token claims.
func (kr *Keyring) Verify(raw string) (*Claims, error) {
	if len(raw) > kr.limits.MaxBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(raw), kr.limits.MaxBytes)
	}
	// A token has exactly one spelling: base64url and dots only (Go's
	// base64 skips CR and LF), decoded strictly (no stray bits in the last
	// character of the signature).
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return nil, fmt.Errorf("%w: byte %q at %d", ErrMalformed, c, i)
		}
	}
	var c Claims
	var used *key
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg(), jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithLeeway(kr.leeway),
		jwt.WithTimeFunc(kr.now),
		jwt.WithExpirationRequired(),
		jwt.WithStrictDecoding(),
	)
	_, err := parser.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		cl := t.Claims.(*Claims)
		var cands []*key
		if kid, _ := t.Header["kid"].(string); kid != "" {
			k := kr.byID[kid]
			if k == nil {
				return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
			}
			cands = []*key{k}
		} else {
			cands = kr.byService[cl.Service]
			if len(cands) == 0 {
				return nil, fmt.Errorf("%w: service %q", ErrUnknownKey, cl.Service)
			}
		}
		keys := jwt.VerificationKeySet{}
		for _, k := range cands {
			switch t.Method.Alg() {
			case jwt.SigningMethodHS256.Alg():
				if k.hmac != nil {
					keys.Keys = append(keys.Keys, k.hmac)
				}
			case jwt.SigningMethodEdDSA.Alg():
				if k.pub != nil {
					keys.Keys = append(keys.Keys, k.pub)
				}
			}
		}
		if len(keys.Keys) == 0 {
			return nil, fmt.Errorf("%w: no %s key", ErrUnknownKey, t.Method.Alg())
		}
		used = cands[0]
		return keys, nil
	})
	if err != nil {
		return nil, classify(err)
	}
	if used.service != c.Service {
		// A key of one service never vouches for another.
		return nil, fmt.Errorf("%w: key %q belongs to service %q, token claims %q", ErrSignature, used.id, used.service, c.Service)
	}
	if err := protocol.ValidName(c.Subject); err != nil {
		return nil, fmt.Errorf("%w: sub: %w", ErrClaims, err)
	}
	if c.Tier != "" {
		if err := protocol.ValidName(c.Tier); err != nil {
			return nil, fmt.Errorf("%w: tier: %w", ErrClaims, err)
		}
	}
	if len(c.Groups) > kr.limits.MaxGroups {
		return nil, fmt.Errorf("%w: %d groups, at most %d", ErrTooLarge, len(c.Groups), kr.limits.MaxGroups)
	}
	for _, g := range c.Groups {
		if err := protocol.ValidName(g); err != nil {
			return nil, fmt.Errorf("%w: grp: %w", ErrClaims, err)
		}
	}
	return &c, nil
}

func classify(err error) error {
	for _, e := range []error{ErrUnknownKey, ErrClaims, ErrTooLarge} {
		if errors.Is(err, e) {
			return err
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return fmt.Errorf("%w: %w", ErrExpired, err)
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return fmt.Errorf("%w: %w", ErrNotYetValid, err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fmt.Errorf("%w: %w", ErrSignature, err)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing), errors.Is(err, jwt.ErrTokenInvalidClaims):
		return fmt.Errorf("%w: %w", ErrClaims, err)
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}
