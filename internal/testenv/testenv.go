// Package testenv builds real tether pieces for tests: an embedded NATS
// server on a free port, a keyring with the sample services, edge nodes on
// free ports and simulated devices, all torn down when the test ends.
package testenv

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
	"github.com/tetherhq/tether/membership"
	"github.com/tetherhq/tether/node"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// Services are the sample services every Env knows, with their HMAC secrets.
var Services = map[string]string{
	"vacuum": "test-secret-vacuum-0123456789abcdef",
	"aircon": "test-secret-aircon-0123456789abcdef",
	"tv":     "test-secret-tv-0123456789abcdef0123",
}

// Keys returns a keyring with the sample services.
func Keys(t testing.TB) *token.Keyring {
	t.Helper()
	m := map[string][]token.Key{}
	for s, secret := range Services {
		m[s] = []token.Key{{ID: s + "-test", HMACSecret: secret}}
	}
	kr, err := token.NewKeyring(m)
	if err != nil {
		t.Fatalf("testenv: keyring: %v", err)
	}
	return kr
}

// Env is one test's cluster.
type Env struct {
	t    testing.TB
	NATS *natsserver.Server
	// NC is a client connection for the test itself (the "app").
	NC   *nats.Conn
	Keys *token.Keyring
	Subj bus.Subjects
}

// New starts an embedded NATS server and returns the environment.
func New(t testing.TB) *Env {
	t.Helper()
	return On(t, natstest.RunServer(t))
}

// On returns an environment on an existing NATS server.
func On(t testing.TB, s *natsserver.Server) *Env {
	t.Helper()
	return &Env{t: t, NATS: s, NC: natstest.Connect(t, s), Keys: Keys(t), Subj: bus.MustSubjects("")}
}

// Log returns a logger for test components: quiet unless TETHER_TEST_LOG is set.
func Log() *slog.Logger {
	if os.Getenv("TETHER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// FastConfig returns a node configuration with short timers, listening on
// a free loopback port.
func FastConfig(id string) node.Config {
	return node.Config{
		ID:            id,
		Listen:        "127.0.0.1:0",
		AuthTimeout:   2 * time.Second,
		PingInterval:  time.Second,
		PingTimeout:   3 * time.Second,
		WriteTimeout:  2 * time.Second,
		AckTimeout:    3 * time.Second,
		ShutdownGrace: 500 * time.Millisecond,
		StatsInterval: time.Second,
		ClusterSecret: "test-cluster-secret-0123456789",
	}
}

// StartNode starts a node on the env's NATS server (or on server, when
// given) and shuts it down when the test ends.
func (e *Env) StartNode(cfg node.Config, server ...*natsserver.Server) *node.Node {
	e.t.Helper()
	srv := e.NATS
	if len(server) > 0 {
		srv = server[0]
	}
	n, _ := e.startNode(cfg, natstest.Connect(e.t, srv), nil)
	return n
}

// StartMember starts a node on the env's NATS server that is a member of
// the cluster kept in st (registered, heartbeating, reaping, answering
// control requests), and shuts it down when the test ends.
func (e *Env) StartMember(cfg node.Config, st membership.Registry) (*node.Node, *membership.Member) {
	e.t.Helper()
	return e.startNode(cfg, natstest.Connect(e.t, e.NATS), st)
}

func (e *Env) startNode(cfg node.Config, nc *nats.Conn, st membership.Registry) (*node.Node, *membership.Member) {
	e.t.Helper()
	deps := node.Deps{NATS: nc, Keys: e.Keys, Log: Log()}
	var m *membership.Member
	if st != nil {
		var err error
		if m, err = membership.New(membership.Deps{Store: st, NATS: nc, Log: Log()}); err != nil {
			e.t.Fatalf("testenv: membership: %v", err)
		}
		deps.Observer = m
	}
	n, err := node.New(cfg, deps)
	if err != nil {
		e.t.Fatalf("testenv: node.New: %v", err)
	}
	if err := n.Start(context.Background()); err != nil {
		e.t.Fatalf("testenv: node start: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	if m != nil {
		if err := m.Start(context.Background(), n); err != nil {
			e.t.Fatalf("testenv: membership start: %v", err)
		}
	}
	return n, m
}

// Token issues a token for device of service.
func (e *Env) Token(service, device string, o token.IssueOptions) string {
	e.t.Helper()
	tok, err := e.Keys.Issue(service, device, o)
	if err != nil {
		e.t.Fatalf("testenv: token: %v", err)
	}
	return tok
}

// Device starts a simulated device (cfg.Token defaults to a fresh token for
// cfg.Service and device) and waits until it is connected. It runs until
// the test ends.
func (e *Env) Device(cfg simulator.DeviceConfig, device string) (*simulator.Device, protocol.Frame) {
	e.t.Helper()
	if cfg.Token == "" && cfg.TokenFunc == nil {
		cfg.Token = e.Token(cfg.Service, device, token.IssueOptions{})
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 20 * time.Millisecond
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	d, err := simulator.NewDevice(cfg)
	if err != nil {
		e.t.Fatalf("testenv: device: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	w, err := d.WaitConnected(wctx)
	if err != nil {
		e.t.Fatalf("testenv: device %s did not connect: %v", device, err)
	}
	return d, w
}
