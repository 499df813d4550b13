// Package process wires each tether server component (an edge node with
// its cluster membership, a directory, the balancer) to NATS and the
// shared store from the configuration, in one place: the `tether`
// commands and `tether dev` build their processes here, so a component is
// wired once.
//
// Every process has the same shape: Start brings it up and returns once it
// serves, Shutdown stops it gracefully within its context, and Run does
// both around the life of a context.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/telemetry"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/token"
)

// Process is one server component wired to NATS and the store.
type Process interface {
	// Start brings the process up; it returns once it serves. A failed
	// Start leaves nothing running.
	Start(ctx context.Context) error
	// Shutdown stops the process gracefully, bounded by ctx. It is
	// idempotent.
	Shutdown(ctx context.Context) error
}

// Run starts p, serves until ctx ends, then shuts p down within grace.
func Run(ctx context.Context, p Process, grace time.Duration) error {
	if err := p.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return p.Shutdown(sctx)
}

// Env is what the processes of one deployment share.
type Env struct {
	// Config holds the service keys, the NATS settings and the store
	// selection. Required.
	Config *config.File
	// Log receives the processes' logs. Default slog.Default().
	Log *slog.Logger
	// Store, when set, is the store every process uses instead of opening
	// the configured one (`tether dev`'s in-process store). It belongs to
	// the caller, who closes it.
	Store store.Store
	// NATSURLs, when set, replace nats.urls of the configuration.
	NATSURLs []string
	// NATSUser, when set, gives the NATS user and password of each role
	// ("node", "directory", "balancer"; user "" for the configuration's
	// own): `tether dev --nats-auth` connects each part as its own user.
	NATSUser func(role string) (user, password string)
}

func (e Env) log() *slog.Logger {
	if e.Log == nil {
		return slog.Default()
	}
	return e.Log
}

func (e Env) keys() (*token.Keyring, error) { return e.Config.Keyring() }

func (e Env) subjects() (bus.Subjects, error) { return e.Config.NATS.Subjects() }

// connect opens a NATS connection named name for a part of role.
func (e Env) connect(ctx context.Context, role, name string) (*nats.Conn, error) {
	c := e.Config.NATS
	if len(e.NATSURLs) > 0 {
		c.URLs = e.NATSURLs
	}
	if e.NATSUser != nil {
		if u, p := e.NATSUser(role); u != "" {
			c.User, c.Password, c.Token, c.Creds = u, p, "", ""
		}
	}
	return bus.Connect(ctx, c, name, e.log())
}

// ErrNoStore is returned when a process needs the shared store and the
// configuration names none.
var ErrNoStore = errors.New("store.redis is not configured")

// openStore returns the shared store and a function that releases it: the
// Env's own store (released by its owner), or the configured Redis. With
// neither, it returns ErrNoStore.
func (e Env) openStore(ctx context.Context) (store.Store, func(), error) {
	if e.Store != nil {
		return e.Store, func() {}, nil
	}
	if e.Config.Store.Redis == nil {
		return nil, nil, ErrNoStore
	}
	telemetry.RouteRedisLogs(e.log())
	st, err := store.OpenRedis(ctx, *e.Config.Store.Redis)
	if err != nil {
		return nil, nil, fmt.Errorf("process: %w", err)
	}
	return st, func() { _ = st.Close() }, nil
}

// registry returns the Prometheus registry of a process part of kind:
// Go and process collectors, tether_build_info and nc's figures.
func registry(kind string, nc *nats.Conn) *prometheus.Registry {
	reg := telemetry.NewRegistry(kind)
	reg.MustRegister(telemetry.NewNATSCollector(nc))
	return reg
}

// announce registers a process part as the NATS micro service
// "tether-<kind>"; its stats endpoint answers reg's tether_* series.
func announce(nc *nats.Conn, subj bus.Subjects, kind, id, description string, reg *prometheus.Registry, md map[string]string) (micro.Service, error) {
	return telemetry.AddService(nc, subj, telemetry.Service{
		Kind: kind, ID: id, Description: description, Metadata: md,
		Stats: func() any { return telemetry.Snapshot(reg) },
	})
}

// metricsURL is the /metrics URL of a listener, or "" without one.
func metricsURL(a net.Addr) string {
	if a == nil {
		return ""
	}
	return "http://" + a.String() + "/metrics"
}

// undo runs cleanups in reverse order; a failed Start uses it to leave
// nothing running.
type undo []func()

func (u *undo) add(f func()) { *u = append(*u, f) }

func (u undo) run() {
	for i := len(u) - 1; i >= 0; i-- {
		u[i]()
	}
}
