package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Config says how to reach NATS. The zero value connects to
// nats://127.0.0.1:4222 with the default prefix.
type Config struct {
	// URLs of the NATS servers of one cluster; the client picks one and
	// fails over to the others. Default: nats://127.0.0.1:4222. A single
	// entry may also hold a comma-separated list.
	URLs []string `yaml:"urls"`
	// Prefix of every subject. Default: DefaultPrefix ("tether").
	Prefix string `yaml:"prefix"`
	// User and Password for user/password authentication.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Token for token authentication.
	Token string `yaml:"token"`
	// Creds is the path of a NATS credentials file (JWT + nkey seed).
	Creds string `yaml:"creds"`
	// TLS settings; TLS is used when CAFile or CertFile is set, or a URL
	// has the tls:// scheme.
	TLS TLSConfig `yaml:"tls"`
	// Name of the connection, as shown in the server's /connz. Default: the
	// component's own name.
	Name string `yaml:"name"`
	// ReconnectWait is the base delay between reconnect attempts; each
	// attempt waits up to twice as long, capped at MaxReconnectWait, with
	// full jitter. Default 100ms. The client reconnects forever.
	ReconnectWait time.Duration `yaml:"reconnect_wait"`
	// MaxReconnectWait caps the delay between reconnect attempts, so that a
	// client is back within about this long of its server coming back.
	// Default 1s.
	MaxReconnectWait time.Duration `yaml:"max_reconnect_wait"`
	// ConnectTimeout bounds the first connection. Default 5s. Until it
	// passes, Connect retries as it would reconnect.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectBufferBytes is how much outgoing data is buffered while
	// disconnected. Default 8 MiB; -1 disables buffering.
	ReconnectBufferBytes int `yaml:"reconnect_buffer_bytes"`
	// PingInterval is how often the client pings its server; three pings
	// unanswered and it reconnects elsewhere (so a server that vanished
	// without closing TCP is left after 3 x PingInterval). Default 20s.
	PingInterval time.Duration `yaml:"ping_interval"`
}

// TLSConfig holds the files for a TLS connection to NATS.
type TLSConfig struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultURL is the NATS URL used when none is configured.
const DefaultURL = "nats://127.0.0.1:4222"

func (c *Config) setDefaults() {
	if len(c.URLs) == 0 {
		c.URLs = []string{DefaultURL}
	}
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = 100 * time.Millisecond
	}
	if c.MaxReconnectWait <= 0 {
		c.MaxReconnectWait = time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.ReconnectBufferBytes == 0 {
		c.ReconnectBufferBytes = 8 << 20
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 20 * time.Second
	}
}

// Validate checks the configuration; errors name the offending key.
func (c Config) Validate() error {
	for _, u := range c.URLs {
		for _, one := range strings.Split(u, ",") {
			one = strings.TrimSpace(one)
			if one == "" {
				return errors.New("nats.urls: empty URL")
			}
			if !strings.Contains(one, "://") {
				return fmt.Errorf("nats.urls: %q has no scheme (want nats://, tls:// or ws://)", one)
			}
		}
	}
	if _, err := NewSubjects(c.Prefix); err != nil {
		return fmt.Errorf("nats.prefix: %w", err)
	}
	if c.Creds != "" && (c.User != "" || c.Token != "") {
		return errors.New("nats.creds: cannot be combined with nats.user or nats.token")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("nats.tls: cert_file and key_file go together")
	}
	return nil
}

// Subjects returns the subject builder for the configured prefix.
func (c Config) Subjects() (Subjects, error) { return NewSubjects(c.Prefix) }

// Options turns the configuration into nats.go options. name is used when
// Config.Name is empty; log receives connection state changes.
func (c Config) Options(name string, log *slog.Logger) []nats.Option {
	c.setDefaults()
	if c.Name != "" {
		name = c.Name
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "nats")
	base, maxWait := c.ReconnectWait, max(c.MaxReconnectWait, c.ReconnectWait)
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(c.ReconnectBufferBytes),
		nats.PingInterval(c.PingInterval),
		nats.MaxPingsOutstanding(3),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := base << min(attempts, 16)
			if d > maxWait || d <= 0 {
				d = maxWait
			}
			return d/2 + rand.N(d/2+1)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("NATS async error", "subject", subj, "err", err)
		}),
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	return opts
}

// Connect dials NATS with the configuration, retrying until it connects,
// ctx ends or Config.ConnectTimeout passes. extra options are applied last.
func Connect(ctx context.Context, c Config, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.setDefaults()
	url := strings.Join(c.URLs, ",")
	opts := append(c.Options(name, log), extra...)
	ctx, cancel := context.WithTimeout(ctx, c.ConnectTimeout)
	defer cancel()
	wait := 50 * time.Millisecond
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) {
			return nil, fmt.Errorf("bus: connect %s: %w", redact(url), err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: connect %s: %w (gave up: %w)", redact(url), err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
}

// redact hides passwords in URLs for error messages. The user info ends at
// the last '@': a password may hold one.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if s := strings.Index(u, "://"); s >= 0 && s < at {
				parts[i] = u[:s+3] + "***@" + u[at+1:]
			}
		}
	}
	return strings.Join(parts, ",")
}
