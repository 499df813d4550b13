package directory

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/tetherhq/tether/internal/ratelimit"
	"github.com/tetherhq/tether/protocol"
)

// Config configures a directory. Zero values mean the documented default;
// applyDefaults sets them all in one place. It maps onto the `directory:`
// section of the YAML configuration.
type Config struct {
	// Listen is the address of the HTTP listener. Default ":8080". Port 0
	// picks a free port (URL tells which). "-" opens no listener: the
	// directory is then served only through Handler, embedded in another
	// server, while Start still runs its background loops.
	Listen string `yaml:"listen"`
	// AdminToken is the bearer token of the admin API (/v1/admin/...).
	// Default "": the admin API is disabled and answers 404
	// {"error":"admin_disabled"}.
	AdminToken string `yaml:"admin_token"`
	// RefreshInterval is how often the cached map is reloaded from the store
	// even without a tether.map.changed event; it also picks up heartbeats
	// and load. Default 2s. It must be shorter than HeartbeatInterval plus
	// one second, or live nodes would flicker out of the answers between
	// reloads.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// MaxAge is the Cache-Control max-age of lookup answers. Default 5s.
	// Use a negative value to send "no-cache".
	MaxAge time.Duration `yaml:"max_age"`
	// HeartbeatInterval is the nodes' heartbeat interval (node
	// heartbeat_interval). A node is live while its last heartbeat is
	// younger than 2*HeartbeatInterval+1s; the directory reaps dead nodes'
	// connections every HeartbeatInterval. Default 2s.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// Spread is the randomness in the best-first order of node lists, as a
	// load band: nodes whose load scores (0 idle, 1 full) differ by less
	// than Spread come in random order, so that devices asking at the same
	// moment do not all pick the same node; a node more than Spread less
	// loaded than another always comes first. Default 0.1. Use a negative
	// value for a strict order (no randomness).
	Spread float64 `yaml:"spread"`
	// TokenTTL is the lifetime of tokens issued by /v1/negotiate. Default 24h.
	TokenTTL time.Duration `yaml:"token_ttl"`
	// RegistrationSecrets maps a service to the secret its app servers (or
	// devices) present as a bearer token to /v1/negotiate. Default: none,
	// and negotiate then only refreshes device tokens. Each secret must be
	// at least 16 bytes, and each service needs a signing key in the
	// keyring (Deps.Keys).
	RegistrationSecrets map[string]string `yaml:"registration_secrets"`
	// PreviousRegistrationSecrets are also accepted, per service, while
	// a registration secret is rotated: the configuration file adds each
	// services.<S>.previous_registration_secret. Default: none.
	PreviousRegistrationSecrets map[string]string `yaml:"previous_registration_secrets"`
	// PreviousAdminToken is also accepted by the admin API while the admin
	// token is rotated. Default: none.
	PreviousAdminToken string `yaml:"previous_admin_token"`
	// StoreTimeout bounds each store call made by the directory. Default 2s.
	StoreTimeout time.Duration `yaml:"store_timeout"`
	// DisableUI turns off the live cluster page at /ui (which answers 404
	// then). Default false: the page is served wherever the process wires
	// one in (`tether directory`, `tether dev`).
	DisableUI bool `yaml:"disable_ui"`
	// ClientCacheSize is the most client mappings cached in memory (for
	// ?client= lookups and negotiate). Default 1,000,000.
	ClientCacheSize int `yaml:"client_cache_size"`

	// Security settings (docs/security.md).

	// RefreshServices are the services whose device tokens /v1/negotiate
	// refreshes (Bearer <device token>, no body). Default: none; the
	// configuration file adds the services with token_refresh: true. A
	// refresh for another service is refused (403 forbidden).
	RefreshServices []string `yaml:"refresh_services"`
	// MaxTokenLifetime bounds refreshing: no refreshed token expires later
	// than this after its chain's first token was issued (its auth_time,
	// else iat), and a token whose chain is older is not refreshed (401
	// refresh_limit). Default 720h (30 days).
	MaxTokenLifetime time.Duration `yaml:"max_token_lifetime"`
	// RevocationRefresh is how often the directory reads the revocations
	// in force from the store, besides hearing new ones on
	// tether.revocations. Default 30s.
	RevocationRefresh time.Duration `yaml:"revocation_refresh"`
	// TLS, when its cert_file is set, serves HTTPS on Listen (and on
	// AdminListen). The files are read again when they change.
	TLS TLSConfig `yaml:"tls"`
	// AdminListen, when set, is a second listener, for an internal
	// network, that alone serves the admin API and /metrics; Listen then
	// answers 404 for them. Default: none (everything on Listen). Port 0
	// picks a free port.
	AdminListen string `yaml:"admin_listen"`
	// TrustedProxies are the networks (CIDR) of the proxies or load
	// balancers in front of the directory: for a request from one of them
	// the client's address is the last X-Forwarded-For entry that is not
	// itself a trusted proxy. Default: none (the peer's address).
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AuthFailures is how many failed authentications (wrong admin token,
	// wrong registration secret, invalid device token) one address may
	// make in a row before it is locked out of the admin API and
	// negotiate for Lockout. They are forgiven at AuthFailures per
	// Lockout. Default 10.
	AuthFailures int `yaml:"auth_failures"`
	// Lockout is how long an address that made too many failed
	// authentications gets 429 rate_limited from the admin API and
	// negotiate. Default 1m.
	Lockout time.Duration `yaml:"lockout"`
	// NegotiateRate is how many /v1/negotiate requests per second one
	// address may make, sustained. Default 20; negative: no limit. Over
	// it: 429 rate_limited with Retry-After.
	NegotiateRate float64 `yaml:"negotiate_rate"`
	// NegotiateBurst is how many negotiate requests one address may make
	// at once before NegotiateRate applies. Default 100.
	NegotiateBurst int `yaml:"negotiate_burst"`
	// RateLimitsExempt are the networks (CIDR) negotiate's rate limit does
	// not apply to: your app servers, when they negotiate on behalf of
	// many devices. Default: none.
	RateLimitsExempt []string `yaml:"rate_limits_exempt"`
}

// TLSConfig makes the directory serve HTTPS.
type TLSConfig struct {
	// CertFile is the PEM certificate chain; setting it turns HTTPS on.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile. Required with CertFile.
	KeyFile string `yaml:"key_file"`
}

// MinRegistrationSecret is the shortest registration secret accepted, in bytes.
const MinRegistrationSecret = 16

// ListenNone, as Config.Listen, opens no listener.
const ListenNone = "-"

func (c *Config) applyDefaults() {
	if c.Listen == "" {
		c.Listen = ":8080"
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = 2 * time.Second
	}
	if c.MaxAge == 0 {
		c.MaxAge = 5 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 2 * time.Second
	}
	if c.Spread == 0 {
		c.Spread = 0.1
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 24 * time.Hour
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 2 * time.Second
	}
	if c.ClientCacheSize <= 0 {
		c.ClientCacheSize = 1_000_000
	}
	if c.MaxTokenLifetime <= 0 {
		c.MaxTokenLifetime = 30 * 24 * time.Hour
	}
	if c.RevocationRefresh <= 0 {
		c.RevocationRefresh = 30 * time.Second
	}
	if c.AuthFailures <= 0 {
		c.AuthFailures = 10
	}
	if c.Lockout <= 0 {
		c.Lockout = time.Minute
	}
	if c.NegotiateRate == 0 {
		c.NegotiateRate = 20
	}
	if c.NegotiateBurst <= 0 {
		c.NegotiateBurst = 100
	}
}

// Validate checks the configuration after defaults; errors name the key.
func (c Config) Validate() error {
	c.applyDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("directory."+key+": "+format, args...))
	}
	if c.Listen != ListenNone {
		if _, port, err := net.SplitHostPort(c.Listen); err != nil {
			bad("listen", "%q: %w", c.Listen, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad("listen", "%q: bad port %q", c.Listen, port)
		}
	}
	if c.RefreshInterval >= c.HeartbeatInterval+time.Second {
		bad("refresh_interval", "%v must be shorter than heartbeat_interval + 1s (%v), or live nodes drop out between reloads",
			c.RefreshInterval, c.HeartbeatInterval+time.Second)
	}
	if c.MaxAge > 0 && c.MaxAge < time.Second {
		bad("max_age", "%v: Cache-Control counts whole seconds; use at least 1s, or a negative value for no-cache", c.MaxAge)
	}
	if c.Spread > 1 {
		bad("spread", "%v is above 1 (the whole load range)", c.Spread)
	}
	if c.TokenTTL < time.Minute {
		bad("token_ttl", "%v is below 1m", c.TokenTTL)
	}
	for _, svc := range slices.Sorted(maps.Keys(c.RegistrationSecrets)) {
		if err := protocol.ValidName(svc); err != nil {
			bad("registration_secrets."+svc, "%w", err)
		}
		if len(c.RegistrationSecrets[svc]) < MinRegistrationSecret {
			bad("registration_secrets."+svc, "secret is %d bytes, at least %d", len(c.RegistrationSecrets[svc]), MinRegistrationSecret)
		}
	}
	for _, svc := range slices.Sorted(maps.Keys(c.PreviousRegistrationSecrets)) {
		if len(c.PreviousRegistrationSecrets[svc]) < MinRegistrationSecret {
			bad("previous_registration_secrets."+svc, "secret is %d bytes, at least %d", len(c.PreviousRegistrationSecrets[svc]), MinRegistrationSecret)
		}
	}
	if c.PreviousAdminToken != "" && c.AdminToken == "" {
		bad("previous_admin_token", "set, but admin_token is not")
	}
	if c.AdminListen != "" {
		if _, port, err := net.SplitHostPort(c.AdminListen); err != nil {
			bad("admin_listen", "%q: %w", c.AdminListen, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad("admin_listen", "%q: bad port %q", c.AdminListen, port)
		}
		if c.Listen == ListenNone {
			bad("admin_listen", "set, but listen is %q", ListenNone)
		}
	}
	for i, svc := range c.RefreshServices {
		if err := protocol.ValidName(svc); err != nil {
			bad(fmt.Sprintf("refresh_services[%d]", i), "%w", err)
		}
	}
	if c.MaxTokenLifetime < c.TokenTTL {
		bad("max_token_lifetime", "%v is shorter than token_ttl %v", c.MaxTokenLifetime, c.TokenTTL)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file go together")
	}
	if _, err := ratelimit.ParseNetworks("directory.trusted_proxies", c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if _, err := ratelimit.ParseNetworks("directory.rate_limits_exempt", c.RateLimitsExempt); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
