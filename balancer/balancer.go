package balancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/store"
)

// Deps are what a balancer needs besides its configuration.
type Deps struct {
	// Store holds the map and the leader lease. Required.
	Store store.Store
	// NATS carries the stats in, and the decisions, map changes and
	// control requests out. Required.
	NATS *nats.Conn
	// Subjects builds subject names. Default: the default prefix.
	Subjects *bus.Subjects
	// Log receives the balancer's logs. Default slog.Default().
	Log *slog.Logger
	// Registry receives the balancer's metrics. Default: a registry of its
	// own, served on Config.MetricsListen.
	Registry *prometheus.Registry
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// RunCommand runs a cold standby command. Default: exec with the
	// configured timeout.
	RunCommand func(ctx context.Context, argv []string) ([]byte, error)
}

// Status is what a balancer says of itself.
type Status struct {
	// ID is this balancer's ID; Leader the ID of the leader as this
	// balancer last knew it ("" when none).
	ID, Leader string
	// IsLeader: this balancer is the leader.
	IsLeader bool
	// Rounds, Decisions and Moves count the rounds this balancer planned as
	// leader, the decisions it applied (or published in a dry run) and
	// the moves those asked for.
	Rounds, Decisions, Moves int64
	// Last is the latest decision, if any.
	Last *bus.Decision
}

// Balancer is the balancer process: it follows the stats, and while it
// leads, plans and applies rounds.
type Balancer struct {
	cfg  Config
	st   store.Store
	nc   *nats.Conn
	subj bus.Subjects
	log  *slog.Logger
	now  func() time.Time
	run  func(ctx context.Context, argv []string) ([]byte, error)

	win *window
	pl  *planner
	m   *metrics

	mu     sync.Mutex
	lease  store.Lease
	leader bool
	status Status

	sub     *nats.Subscription
	httpLn  net.Listener
	httpSrv *http.Server
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started bool
	stopped bool
}

// New builds a balancer; Start starts it.
func New(cfg Config, d Deps) (*Balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	if d.Store == nil || d.NATS == nil {
		return nil, errors.New("balancer: Deps.Store and Deps.NATS are required")
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = "balancer-" + host + "-" + strconv.Itoa(os.Getpid())
	}
	b := &Balancer{
		cfg: cfg, st: d.Store, nc: d.NATS, log: d.Log, now: d.Now, run: d.RunCommand,
		win: newWindow(cfg.Window), pl: newPlanner(cfg),
	}
	if d.Subjects != nil {
		b.subj = *d.Subjects
	} else {
		b.subj = bus.MustSubjects("")
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.log = b.log.With("component", "balancer", "balancer", cfg.ID)
	if b.now == nil {
		b.now = time.Now
	}
	if b.run == nil {
		b.run = runCommand
	}
	reg := d.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	b.m = newMetrics(reg, cfg.ID)
	b.status.ID = cfg.ID
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// ID returns the balancer's ID.
func (b *Balancer) ID() string { return b.cfg.ID }

// Status returns what the balancer says of itself.
func (b *Balancer) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.status
	if s.Last != nil {
		last := *s.Last
		s.Last = &last
	}
	return s
}

// Start subscribes to the stats, and starts the leader election and the
// planning rounds. It returns once the stats subscription is live.
func (b *Balancer) Start(ctx context.Context) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("balancer: already started")
	}
	b.started = true
	b.mu.Unlock()
	sub, err := b.nc.Subscribe(b.subj.AllNodeStats(), func(m *nats.Msg) {
		st, err := bus.ParseNodeStats(m.Data)
		if err != nil {
			b.m.errors.WithLabelValues("stats").Inc()
			return
		}
		b.win.add(b.now(), st)
	})
	if err != nil {
		return fmt.Errorf("balancer: subscribe: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("balancer: NATS flush: %w", err)
	}
	b.sub = sub
	if err := b.startHTTP(); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.loop()
	}()
	b.log.Info("balancer started", "dry_run", b.cfg.DryRun, "interval", b.cfg.Interval)
	return nil
}

// Run starts the balancer, runs until ctx ends, then shuts it down.
func (b *Balancer) Run(ctx context.Context) error {
	if err := b.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return b.Shutdown(sctx)
}

// Shutdown stops the rounds, waits for the moves under way to be asked
// for, and gives up the lease so that a standby balancer takes over at
// once. It is idempotent.
func (b *Balancer) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if !b.started || b.stopped {
		b.mu.Unlock()
		return nil
	}
	b.stopped = true
	b.mu.Unlock()
	if b.sub != nil {
		_ = b.sub.Unsubscribe()
	}
	b.cancel()
	b.stopHTTP()
	b.wg.Wait()
	b.mu.Lock()
	l, leader := b.lease, b.leader
	b.leader = false
	b.mu.Unlock()
	if leader {
		if err := b.st.ReleaseLease(ctx, l); err != nil {
			b.log.Warn("could not release the leader lease; a standby takes over when it expires", "err", err)
		}
	}
	b.m.leader.Set(0)
	b.log.Info("balancer stopped")
	return nil
}

// loop runs the leader election and, while leading, the rounds.
func (b *Balancer) loop() {
	lease := time.NewTicker(b.cfg.LeaseTTL / 3)
	defer lease.Stop()
	rounds := time.NewTicker(b.cfg.Interval)
	defer rounds.Stop()
	b.elect()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-lease.C:
			b.elect()
		case <-rounds.C:
			if b.isLeader() {
				b.round()
			}
		}
	}
}

func (b *Balancer) isLeader() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leader
}

func (b *Balancer) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, 2*time.Second)
}

// elect renews the lease while leading, or tries to take it.
func (b *Balancer) elect() {
	ctx, cancel := b.storeCtx()
	defer cancel()
	b.mu.Lock()
	l, leader := b.lease, b.leader
	b.mu.Unlock()
	if leader {
		err := b.st.RenewLease(ctx, l, b.cfg.LeaseTTL)
		if err == nil {
			return
		}
		// Lost, or the store does not answer: stop acting at once. Another
		// balancer may hold the lease already, and a write with this one
		// would be refused anyway.
		b.log.Warn("leadership lost", "err", err)
		b.m.errors.WithLabelValues("lease").Inc()
		b.setLeader(store.Lease{}, false, "")
		return
	}
	got, err := b.st.AcquireLease(ctx, store.LeaseBalancer, b.cfg.ID, b.cfg.LeaseTTL)
	if err != nil {
		holder := ""
		if h, herr := b.st.LeaseHolder(ctx, store.LeaseBalancer); herr == nil {
			holder = h.Holder
		}
		b.mu.Lock()
		b.status.Leader = holder
		b.mu.Unlock()
		if !errors.Is(err, store.ErrLeaseHeld) {
			b.m.errors.WithLabelValues("lease").Inc()
		}
		return
	}
	b.log.Info("leading", "token", got.Token)
	// A new leader starts from fresh facts: what the previous leader was
	// waiting for (cooldowns, wakes) is no longer known.
	b.pl = newPlanner(b.cfg)
	b.setLeader(got, true, b.cfg.ID)
}

func (b *Balancer) setLeader(l store.Lease, leader bool, holder string) {
	b.mu.Lock()
	b.lease, b.leader = l, leader
	b.status.IsLeader, b.status.Leader = leader, holder
	b.mu.Unlock()
	if leader {
		b.m.leader.Set(1)
	} else {
		b.m.leader.Set(0)
	}
}
