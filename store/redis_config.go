package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/internal/certs"
)

// RedisConfig says how to reach Redis: either URL (one server) or Addrs (one
// server, a Cluster's seed nodes, or Sentinels with MasterName). Zero values
// mean the defaults below.
type RedisConfig struct {
	// URL is "redis://[user:pass@]host:port/db", or "rediss://..." for TLS.
	// go-redis options may follow as query parameters, such as
	// "?dial_timeout=1s&max_retries=2". It excludes Addrs, MasterName,
	// Username, Password and DB. Default: none.
	URL string `yaml:"url"`
	// Addrs are host:port addresses: one is a single Redis, several are a
	// Cluster's seed nodes, and with MasterName they are the Sentinels.
	// Default: ["127.0.0.1:6379"] when URL is empty too.
	Addrs []string `yaml:"addrs"`
	// MasterName is the Sentinel master set; setting it selects Sentinel.
	// Default: "" (no Sentinel).
	MasterName string `yaml:"master_name"`
	// Username authenticates with Redis ACLs. Default: "" (none).
	Username string `yaml:"username"`
	// Password authenticates with Redis. Default: "" (none).
	Password string `yaml:"password"`
	// DB is the database number; a Cluster has only 0. Default: 0.
	DB int `yaml:"db"`
	// Prefix starts every key, so that several deployments can share a
	// Redis. It may not contain '{' or '}', which would defeat the hash
	// tags that spread the keys over a Cluster. Default: "tether:".
	Prefix string `yaml:"prefix"`
	// SentinelUsername and SentinelPassword authenticate with the
	// Sentinels themselves (their requirepass / ACL), apart from Username
	// and Password, which are the data nodes'. Default: none.
	SentinelUsername string `yaml:"sentinel_username"`
	SentinelPassword string `yaml:"sentinel_password"`
	// TLS connects with TLS to every Redis address (one server, the
	// Sentinels and the servers they name, a Cluster's nodes); with URL,
	// "rediss://" turns it on and TLS adds its files. Default: off.
	TLS RedisTLS `yaml:"tls"`
}

// RedisTLS is TLS to Redis.
type RedisTLS struct {
	// Enabled turns TLS on for Addrs. Default false (rediss:// turns it
	// on for URL).
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs to trust. Default: the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate, for a Redis with
	// tls-auth-clients. Default: none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name checked in the servers' certificates.
	// Default: the host of each address.
	ServerName string `yaml:"server_name"`
}

func (t RedisTLS) set() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.ServerName != ""
}

// config builds the client tls.Config.
func (t RedisTLS) config() (*tls.Config, error) {
	return certs.ClientConfig(t.CAFile, t.CertFile, t.KeyFile, t.ServerName)
}

// withDefaults returns c with every default applied.
func (c RedisConfig) withDefaults() RedisConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultRedisPrefix
	}
	if c.URL == "" && len(c.Addrs) == 0 && c.MasterName == "" {
		c.Addrs = []string{"127.0.0.1:6379"}
	}
	return c
}

// Validate checks the configuration (with defaults applied); its errors name
// the offending key.
func (c RedisConfig) Validate() error {
	c = c.withDefaults()
	const key = "store.redis."
	var errs []error
	bad := func(k, format string, args ...any) {
		errs = append(errs, fmt.Errorf(key+k+": "+format, args...))
	}
	if c.URL != "" {
		if u, err := url.Parse(c.URL); err != nil {
			bad("url", "%w", err)
		} else if u.Scheme != "redis" && u.Scheme != "rediss" {
			bad("url", "scheme %q, want redis or rediss", u.Scheme)
		} else if _, err := redis.ParseURL(c.URL); err != nil {
			bad("url", "%w", err)
		}
		for _, f := range []struct {
			key string
			set bool
		}{
			{"addrs", len(c.Addrs) > 0}, {"master_name", c.MasterName != ""},
			{"username", c.Username != ""}, {"password", c.Password != ""}, {"db", c.DB != 0},
		} {
			if f.set {
				bad(f.key, "set together with store.redis.url; put it in the URL or drop the URL")
			}
		}
	}
	if c.MasterName != "" && len(c.Addrs) == 0 {
		bad("addrs", "Sentinel (master_name %q) needs the Sentinels' addresses", c.MasterName)
	}
	for i, a := range c.Addrs {
		if host, port, err := net.SplitHostPort(a); err != nil {
			bad(fmt.Sprintf("addrs[%d]", i), "%w", err)
		} else if host == "" || port == "" {
			bad(fmt.Sprintf("addrs[%d]", i), "%q is not host:port", a)
		}
	}
	switch {
	case c.DB < 0:
		bad("db", "negative (%d)", c.DB)
	case c.DB != 0 && len(c.Addrs) > 1 && c.MasterName == "":
		bad("db", "%d, but a Cluster has only db 0", c.DB)
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		bad("prefix", "%q contains '{' or '}'", c.Prefix)
	}
	if (c.SentinelUsername != "" || c.SentinelPassword != "") && c.MasterName == "" {
		bad("sentinel_password", "set, but master_name is not (no Sentinel)")
	}
	if c.URL != "" && c.TLS.Enabled && !strings.HasPrefix(c.URL, "rediss://") {
		bad("tls.enabled", "with url, use rediss:// to turn TLS on")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file go together")
	}
	if c.TLS.set() {
		if _, err := c.TLS.config(); err != nil {
			bad("tls", "%w", err)
		}
	}
	return errors.Join(errs...)
}

// OpenRedis validates cfg, connects to Redis and checks that it answers. The
// store owns the client: Close closes it. Contexts' deadlines bound every call.
func OpenRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open redis: %w: %w", ErrInvalid, err)
	}
	cfg = cfg.withDefaults()
	var client redis.UniversalClient
	if cfg.URL != "" {
		opts, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("open redis: %w: store.redis.url: %w", ErrInvalid, err)
		}
		opts.ContextTimeoutEnabled = true
		if opts.TLSConfig != nil && cfg.TLS.set() {
			tc, err := cfg.TLS.config()
			if err != nil {
				return nil, fmt.Errorf("open redis: %w: store.redis.tls: %w", ErrInvalid, err)
			}
			if tc.ServerName == "" {
				tc.ServerName = opts.TLSConfig.ServerName
			}
			opts.TLSConfig = tc
		}
		client = redis.NewClient(opts)
	} else {
		uo := &redis.UniversalOptions{
			Addrs:                 cfg.Addrs,
			MasterName:            cfg.MasterName,
			Username:              cfg.Username,
			Password:              cfg.Password,
			SentinelUsername:      cfg.SentinelUsername,
			SentinelPassword:      cfg.SentinelPassword,
			DB:                    cfg.DB,
			ContextTimeoutEnabled: true,
		}
		if cfg.TLS.set() {
			tc, err := cfg.TLS.config()
			if err != nil {
				return nil, fmt.Errorf("open redis: %w: store.redis.tls: %w", ErrInvalid, err)
			}
			uo.TLSConfig = tc
		}
		client = redis.NewUniversalClient(uo)
	}
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, fail("open redis", err)
	}
	r := NewRedis(client, cfg.Prefix)
	r.owned = true
	return r, nil
}
