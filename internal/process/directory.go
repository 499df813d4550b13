package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/console"
	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/store"
)

// Directory is a directory process.
type Directory struct {
	env Env
	cfg directory.Config
	// Seed applies the configuration's seed section to the store at start.
	seed bool
	// Reseed is the seed the directory applies to a store it finds empty
	// (directory.Deps.Seed): the configuration's seed section unless
	// changed before Start.
	Reseed *store.Seed

	mu      sync.Mutex
	d       *directory.Server
	nc      *nats.Conn
	svc     micro.Service
	ui      *console.Console
	release func()
	stopped bool
}

var _ Process = (*Directory)(nil)

// DirectoryConfig is the directory section of the configuration with the
// registration secrets and token_refresh settings of the services section
// merged in (directory.registration_secrets wins).
func DirectoryConfig(env Env) directory.Config {
	d := env.Config.Directory
	secrets := env.Config.RegistrationSecrets()
	for svc, s := range d.RegistrationSecrets {
		secrets[svc] = s
	}
	d.RegistrationSecrets = secrets
	prev := env.Config.PreviousRegistrationSecrets()
	for svc, s := range d.PreviousRegistrationSecrets {
		prev[svc] = s
	}
	d.PreviousRegistrationSecrets = prev
	for _, svc := range env.Config.RefreshServices() {
		if !slices.Contains(d.RefreshServices, svc) {
			d.RefreshServices = append(d.RefreshServices, svc)
		}
	}
	return d
}

// NewDirectory returns a directory process for cfg (DirectoryConfig, with
// any command-line overrides applied). With seed, Start applies the
// configuration's seed section first. It checks cfg; Start connects.
func NewDirectory(env Env, cfg directory.Config, seed bool) (*Directory, error) {
	if env.Config == nil {
		return nil, errors.New("process: Env.Config is required")
	}
	if err := errors.Join(env.Config.ValidateCommon(), cfg.Validate()); err != nil {
		return nil, err
	}
	if env.Store == nil && env.Config.Store.Redis == nil {
		return nil, fmt.Errorf("%w: a directory needs the shared store (tether dev runs everything in one process instead)", ErrNoStore)
	}
	if seed && env.Config.Seed == nil {
		return nil, errors.New("--seed: the configuration has no seed section")
	}
	return &Directory{env: env, cfg: cfg, seed: seed, Reseed: env.Config.Seed}, nil
}

// Server returns the directory (nil before Start).
func (p *Directory) Server() *directory.Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.d
}

// Start connects to the store and NATS, applies the seed when asked, and
// starts the directory.
func (p *Directory) Start(ctx context.Context) (err error) {
	var u undo
	defer func() {
		if err != nil {
			u.run()
		}
	}()
	log := p.env.log()
	keys, err := p.env.keys()
	if err != nil {
		return err
	}
	subj, err := p.env.subjects()
	if err != nil {
		return err
	}
	st, release, err := p.env.openStore(ctx)
	if err != nil {
		return err
	}
	u.add(release)
	if p.seed {
		if err := p.env.Config.Seed.Apply(ctx, st); err != nil {
			return err
		}
		log.Info("seed applied")
	}
	nc, err := p.env.connect(ctx, "directory", "tether-directory")
	if err != nil {
		return err
	}
	u.add(nc.Close)
	reg := registry("directory", nc)
	var ui *console.Console
	deps := directory.Deps{Store: st, NATS: nc, Subjects: &subj, Keys: keys, Log: log, Registry: reg, Seed: p.Reseed}
	if !p.cfg.DisableUI {
		if ui, err = newConsole(ctx, nc, subj, st, p.cfg.HeartbeatInterval, log); err != nil {
			return err
		}
		u.add(func() { _ = ui.Shutdown(context.Background()) })
		deps.UI = ui
	}
	d, err := directory.New(p.cfg, deps)
	if err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	u.add(func() { _ = d.Shutdown(context.Background()) })
	svc, err := announce(nc, subj, "directory", directoryID(d), "tether directory: node lists for devices, negotiate, admin API", reg,
		map[string]string{"url": d.URL(), "metrics": d.URL() + "/metrics"})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.d, p.nc, p.release, p.svc, p.ui = d, nc, release, svc, ui
	p.mu.Unlock()
	return nil
}

// Shutdown stops the directory and closes its connections.
func (p *Directory) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.d == nil || p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	d, nc, release, svc, ui := p.d, p.nc, p.release, p.svc, p.ui
	p.mu.Unlock()
	_ = svc.Stop()
	if ui != nil {
		_ = ui.Shutdown(ctx) // ends the pages' event streams, which would hold up the HTTP shutdown
	}
	err := d.Shutdown(ctx)
	nc.Close()
	release()
	return err
}

// directoryID names a directory in its micro service: the host and port
// of its listener, or "embedded" without one.
func directoryID(d *directory.Server) string {
	u := strings.TrimPrefix(d.URL(), "http://")
	if u == "" {
		return "embedded"
	}
	return u
}

// newConsole starts the live cluster page a directory serves at /ui.
func newConsole(ctx context.Context, nc *nats.Conn, subj bus.Subjects, st store.Store, heartbeat time.Duration, log *slog.Logger) (*console.Console, error) {
	ui, err := console.New(console.Deps{
		NATS: nc, Subjects: &subj, Map: st.Map, HeartbeatInterval: heartbeat, Log: log,
		Decisions: func(ctx context.Context, limit int) ([]bus.Decision, error) {
			recs, err := st.Records(ctx, store.LogDecisions, limit)
			if err != nil {
				return nil, err
			}
			var out []bus.Decision
			for _, r := range recs {
				if d, err := bus.ParseDecision(r); err == nil {
					out = append(out, d)
				}
			}
			return out, nil
		},
	})
	if err != nil {
		return nil, err
	}
	if err := ui.Start(ctx); err != nil {
		return nil, err
	}
	return ui, nil
}
