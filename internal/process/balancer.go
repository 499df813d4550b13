package process

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/tetherhq/tether/balancer"
)

// Balancer is a balancer process.
type Balancer struct {
	env Env
	cfg balancer.Config

	mu      sync.Mutex
	b       *balancer.Balancer
	nc      *nats.Conn
	svc     micro.Service
	release func()
	stopped bool
}

var _ Process = (*Balancer)(nil)

// NewBalancer returns a balancer process for cfg (the balancer section,
// with the nodes' heartbeat interval filled in when it does not say). It
// checks cfg; Start connects.
func NewBalancer(env Env, cfg balancer.Config) (*Balancer, error) {
	if env.Config == nil {
		return nil, errors.New("process: Env.Config is required")
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = env.Config.Node.HeartbeatInterval
	}
	if err := errors.Join(env.Config.ValidateCommon(), cfg.Validate()); err != nil {
		return nil, err
	}
	if env.Store == nil && env.Config.Store.Redis == nil {
		return nil, fmt.Errorf("%w: the balancer needs the shared store", ErrNoStore)
	}
	return &Balancer{env: env, cfg: cfg}, nil
}

// Balancer returns the balancer (nil before Start).
func (p *Balancer) Balancer() *balancer.Balancer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.b
}

// Start connects to the store and NATS and starts the balancer.
func (p *Balancer) Start(ctx context.Context) (err error) {
	var u undo
	defer func() {
		if err != nil {
			u.run()
		}
	}()
	subj, err := p.env.subjects()
	if err != nil {
		return err
	}
	st, release, err := p.env.openStore(ctx)
	if err != nil {
		return err
	}
	u.add(release)
	nc, err := p.env.connect(ctx, "balancer", "tether-balancer")
	if err != nil {
		return err
	}
	u.add(nc.Close)
	reg := registry("balancer", nc)
	b, err := balancer.New(p.cfg, balancer.Deps{Store: st, NATS: nc, Subjects: &subj, Log: p.env.log(), Registry: reg})
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	u.add(func() { _ = b.Shutdown(context.Background()) })
	svc, err := announce(nc, subj, "balancer", b.ID(), "tether balancer: moves services between nodes, wakes and sleeps standby nodes", reg,
		map[string]string{"metrics": metricsURL(b.MetricsAddr())})
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.b, p.nc, p.release, p.svc = b, nc, release, svc
	p.mu.Unlock()
	return nil
}

// Shutdown stops the balancer (a standby balancer takes over at once) and
// closes its connections.
func (p *Balancer) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.b == nil || p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	b, nc, release, svc := p.b, p.nc, p.release, p.svc
	p.mu.Unlock()
	_ = svc.Stop()
	err := b.Shutdown(ctx)
	nc.Close()
	release()
	return err
}
