package process

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/balancer"
)

// Balancer is a balancer process.
type Balancer struct {
	env Env
	cfg balancer.Config

	mu      sync.Mutex
	b       *balancer.Balancer
	nc      *nats.Conn
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
	nc, err := p.env.connect(ctx, "tether-balancer")
	if err != nil {
		return err
	}
	u.add(nc.Close)
	b, err := balancer.New(p.cfg, balancer.Deps{Store: st, NATS: nc, Subjects: &subj, Log: p.env.log()})
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	p.mu.Lock()
	p.b, p.nc, p.release = b, nc, release
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
	b, nc, release := p.b, p.nc, p.release
	p.mu.Unlock()
	err := b.Shutdown(ctx)
	nc.Close()
	release()
	return err
}
