// Package natsserver runs a NATS server inside a tether process: the
// single-binary default (`tether dev`, `tether nats`) and the tests. It is the
// only package that links nats-server; clients (appsdk, the nodes'
// connections) need only package bus.
//
// Addresses follow the project's one port convention: a listener is a
// host:port string, port 0 picks any free port, and an optional listener
// left empty is off.
package natsserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tetherhq/tether/bus"
)

// DefaultListen is the client address used when Config.Listen is empty.
const DefaultListen = "127.0.0.1:4222"

// Config configures an embedded NATS server. The zero value listens on
// DefaultListen with no monitoring and no cluster.
type Config struct {
	// Listen is the client address. Default DefaultListen; port 0 picks a
	// free port (ClientURL tells which).
	Listen string `yaml:"listen"`
	// HTTPListen is the address of the monitoring endpoints (/varz, /connz,
	// /subsz, ...). Default: none (monitoring off).
	HTTPListen string `yaml:"http_listen"`
	// ClusterListen is the address of the cluster (route) listener; setting
	// it turns clustering on. Default: none.
	ClusterListen string `yaml:"cluster_listen"`
	// ClusterName names the cluster; every server of a cluster needs the
	// same. Default "tether".
	ClusterName string `yaml:"cluster_name"`
	// Routes are the nats-route:// URLs of other servers of the cluster.
	Routes []string `yaml:"routes"`
	// ServerName shows in monitoring. Default: generated.
	ServerName string `yaml:"server_name"`
	// MaxPayload is the largest message accepted, in bytes. Default 1 MiB.
	MaxPayload int32 `yaml:"max_payload"`
	// User and Password, when set, are required of every client (one user
	// for everything; see Auth for one per role). Default: none.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Auth, when set, gives every role of a tether deployment its own
	// user with generated permissions (auth.go); it excludes User. It
	// needs Subjects and Services. Default: none.
	Auth *Auth `yaml:"auth"`
	// Subjects and Services are the deployment's subject prefix and
	// services, for Auth's permissions (from the tether configuration).
	Subjects bus.Subjects `yaml:"-"`
	Services []string     `yaml:"-"`
	// TLS, when its cert_file is set, makes clients connect with TLS
	// (tls://). Default: none.
	TLS TLSConfig `yaml:"tls"`
	// ClusterUser and ClusterPassword, when set, are required of the other
	// servers of the cluster (their routes carry them:
	// nats-route://user:password@host:port). Default: none.
	ClusterUser     string `yaml:"cluster_user"`
	ClusterPassword string `yaml:"cluster_password"`
	// ClusterTLS, when its cert_file is set, encrypts (and with verify,
	// mutually authenticates) the routes. Default: none.
	ClusterTLS TLSConfig `yaml:"cluster_tls"`
	// Logs turns the server's own logging on (through slog).
	Logs bool `yaml:"logs"`
	// SystemAccount, when its user is set, gives NATS's system account
	// (SYS) that one user, so that operators' tools see the whole server:
	// `nats server report`, `nats server list`, nats-surveyor. tether's
	// own clients then live in the account ClientAccountName, which does
	// not see the system account's subjects: with User set they log in as
	// before, without it they connect without credentials (the server's
	// no_auth_user). Default: no system user, and every client in the
	// global account ($G).
	SystemAccount SystemAccount `yaml:"system_account"`
}

// SystemAccount is the user of NATS's system account.
type SystemAccount struct {
	// User and Password log into the system account. Both or neither.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
}

// SystemAccountName is the name of the system account.
const SystemAccountName = "SYS"

// ClientAccountName is the account of tether's clients (nodes, directories,
// balancers, apps) when the server has a system user.
const ClientAccountName = "TETHER"

// anonymousUser is the global account's user that clients without
// credentials become when a system user exists.
const anonymousUser = "tether"

// Validate checks the configuration; errors name the key.
func (c Config) Validate() error {
	if (c.User == "") != (c.Password == "") {
		return errors.New("nats_server.user and nats_server.password go together")
	}
	sa := c.SystemAccount
	if (sa.User == "") != (sa.Password == "") {
		return errors.New("nats_server.system_account: user and password go together")
	}
	if sa.User != "" && (sa.User == c.User || sa.User == anonymousUser) {
		return fmt.Errorf("nats_server.system_account.user: %q is taken by tether's clients", sa.User)
	}
	if c.Auth != nil {
		if c.User != "" {
			return errors.New("nats_server.auth and nats_server.user exclude each other")
		}
		for _, r := range c.Auth.roles() {
			if sa.User != "" && r.cred.Password != "" && r.cred.User == sa.User {
				return fmt.Errorf("nats_server.system_account.user: %q is taken by nats_server.auth", sa.User)
			}
		}
	}
	return nil
}

// TLSConfig holds the PEM files of a TLS listener.
type TLSConfig struct {
	// CertFile and KeyFile are the server's certificate and key; setting
	// CertFile turns TLS on.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile verifies the peers' certificates (clients', or other
	// servers'). Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// Verify requires peers to present a certificate signed by CAFile.
	// Default false.
	Verify bool `yaml:"verify"`
}

func (t TLSConfig) config() (*tls.Config, error) {
	return server.GenTLSConfig(&server.TLSConfigOpts{CertFile: t.CertFile, KeyFile: t.KeyFile, CaFile: t.CAFile, Verify: t.Verify})
}

// Server is an embedded NATS server.
type Server struct {
	ns                       *server.Server
	routeUser, routePassword string
	tls                      bool
}

// Errors.
var (
	// ErrPortTaken is returned when a listener's port is in use.
	ErrPortTaken = errors.New("natsserver: port is taken")
	// ErrNotReady is returned when the server does not come up in time.
	ErrNotReady = errors.New("natsserver: server not ready")
)

// hostPort splits a listen address; port 0 becomes nats-server's
// RANDOM_PORT.
func hostPort(key, addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("natsserver: %s %q: %w", key, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("natsserver: %s %q: bad port", key, addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Start starts an embedded NATS server and waits until it accepts clients.
func Start(c Config, log *slog.Logger) (*Server, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	host, port, err := hostPort("listen", c.Listen)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		Host:       host,
		Port:       port,
		ServerName: c.ServerName,
		MaxPayload: c.MaxPayload,
		Username:   c.User,
		Password:   c.Password,
		NoSigs:     true,
		NoLog:      !c.Logs,
	}
	var clients *server.Account // tether's account beside the system account; nil: $G
	if sa := c.SystemAccount; sa.User != "" {
		// An account of their own for the clients, rather than $G: with
		// only $G and the system account, nats-server would let clients
		// without credentials into $G whatever the users say.
		sys := server.NewAccount(SystemAccountName)
		clients = server.NewAccount(ClientAccountName)
		opts.Accounts = []*server.Account{sys, clients}
		opts.SystemAccount = SystemAccountName
		opts.Users = []*server.User{{Username: sa.User, Password: sa.Password, Account: sys}}
		opts.Username, opts.Password = "", ""
	}
	switch {
	case c.Auth != nil:
		// One user per role, all in tether's account.
		subj := c.Subjects
		if subj.Prefix() == "" {
			subj = bus.MustSubjects("")
		}
		if err := c.Auth.Validate("auth", c.Services); err != nil {
			return nil, fmt.Errorf("natsserver: %w", err)
		}
		users, err := c.Auth.users(subj, c.Services)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			u.Account = clients
		}
		opts.Users = append(opts.Users, users...)
		opts.Username, opts.Password = "", ""
	case clients != nil && c.User != "":
		opts.Users = append(opts.Users, &server.User{Username: c.User, Password: c.Password, Account: clients})
	case clients != nil:
		opts.Users = append(opts.Users, &server.User{Username: anonymousUser, Account: clients})
		opts.NoAuthUser = anonymousUser
	}
	if c.TLS.CertFile != "" {
		if opts.TLSConfig, err = c.TLS.config(); err != nil {
			return nil, fmt.Errorf("natsserver: tls: %w", err)
		}
		opts.TLS, opts.TLSVerify = true, c.TLS.Verify
		opts.TLSTimeout = 2
	}
	if c.HTTPListen != "" {
		if opts.HTTPHost, opts.HTTPPort, err = hostPort("http_listen", c.HTTPListen); err != nil {
			return nil, err
		}
	}
	if c.ClusterListen != "" {
		opts.Cluster.Name = c.ClusterName
		if opts.Cluster.Name == "" {
			opts.Cluster.Name = "tether"
		}
		if opts.Cluster.Host, opts.Cluster.Port, err = hostPort("cluster_listen", c.ClusterListen); err != nil {
			return nil, err
		}
		opts.Cluster.Username, opts.Cluster.Password = c.ClusterUser, c.ClusterPassword
		if c.ClusterTLS.CertFile != "" {
			if opts.Cluster.TLSConfig, err = c.ClusterTLS.config(); err != nil {
				return nil, fmt.Errorf("natsserver: cluster_tls: %w", err)
			}
			opts.Cluster.TLSTimeout = 2
		}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("natsserver: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	} else if len(c.Routes) > 0 {
		return nil, errors.New("natsserver: routes need cluster_listen")
	}
	// nats-server waits out its whole start timeout when a port is taken;
	// say so at once instead.
	for _, hp := range []struct {
		host string
		port int
	}{{opts.Host, opts.Port}, {opts.HTTPHost, opts.HTTPPort}, {opts.Cluster.Host, opts.Cluster.Port}} {
		if hp.port > 0 && !PortFree(hp.host, hp.port) {
			return nil, fmt.Errorf("natsserver: %s: %w", net.JoinHostPort(hp.host, strconv.Itoa(hp.port)), ErrPortTaken)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: %w", err)
	}
	if c.Logs {
		if log == nil {
			log = slog.Default()
		}
		ns.SetLogger(slogLogger{log.With("component", "nats-server")}, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsserver: on %s: %w", c.Listen, ErrNotReady)
	}
	return &Server{ns: ns, routeUser: c.ClusterUser, routePassword: c.ClusterPassword, tls: c.TLS.CertFile != ""}, nil
}

// ClientURL is the nats:// URL clients connect to (tls:// with TLS).
func (s *Server) ClientURL() string {
	u := s.ns.ClientURL()
	if rest, ok := strings.CutPrefix(u, "nats://"); ok && s.tls {
		u = "tls://" + rest
	}
	return u
}

// MonitorURL is the base http:// URL of the monitoring endpoints, or "" when
// monitoring is off.
func (s *Server) MonitorURL() string {
	a := s.ns.MonitorAddr()
	if a == nil {
		return ""
	}
	return "http://" + net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
}

// RouteURL is the nats-route:// URL other servers use to join this one's
// cluster, with the route credentials when there are some, or "" when
// clustering is off.
func (s *Server) RouteURL() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	u := url.URL{Scheme: "nats-route", Host: net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))}
	if s.routeUser != "" {
		u.User = url.UserPassword(s.routeUser, s.routePassword)
	}
	return u.String()
}

// NumRoutes is the number of other servers this one has a route to. (With
// route pooling, nats-server opens several connections to each; its own
// NumRoutes counts those.)
func (s *Server) NumRoutes() int { return s.ns.NumRemotes() }

// NumSubscriptions is the number of subscriptions the server holds.
func (s *Server) NumSubscriptions() uint32 { return s.ns.NumSubscriptions() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// PortFree reports whether host:port can be listened on right now.
func PortFree(host string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Noticef(format string, v ...any) { s.l.Info(fmt.Sprintf(format, v...)) }
func (s slogLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s slogLogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogLogger) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogLogger) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s slogLogger) Tracef(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
