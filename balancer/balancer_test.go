package balancer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/tetherhq/tether/balancer"
	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// fakeNodes stands in for running nodes: it heartbeats them in the store,
// publishes their stats, and records the control requests they get.
type fakeNodes struct {
	t    *testing.T
	st   store.Store
	nc   *nats.Conn
	subj bus.Subjects

	mu    sync.Mutex
	stats map[string]bus.NodeStats
	ctl   []bus.ControlRequest
	ctlTo []string
}

func newFakeNodes(t *testing.T, st store.Store, nc *nats.Conn, ids ...string) *fakeNodes {
	f := &fakeNodes{t: t, st: st, nc: nc, subj: bus.MustSubjects(""), stats: map[string]bus.NodeStats{}}
	for _, id := range ids {
		if err := st.PutNode(t.Context(), store.Node{ID: id, URL: "ws://" + id + "/ws", State: store.StateActive, Capacity: 10000}); err != nil {
			t.Fatal(err)
		}
		f.stats[id] = bus.NodeStats{Node: id, IntervalMS: 100, Services: map[string]bus.ServiceStats{}}
		sub, err := nc.Subscribe(f.subj.NodeCtl(id), func(m *nats.Msg) {
			req, err := bus.ParseControlRequest(m.Data)
			if err != nil {
				t.Errorf("bad control request: %v", err)
				return
			}
			f.mu.Lock()
			f.ctl = append(f.ctl, req)
			f.ctlTo = append(f.ctlTo, id)
			f.mu.Unlock()
			_ = m.Respond(bus.ControlReply{Node: id, OK: true, State: "active"}.Encode())
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeNodes) conns(id, service, tier string, k int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stats[id]
	st.Services[service] = bus.ServiceStats{Connections: map[string]int{tier: k}}
	st.Connections = 0
	for _, s := range st.Services {
		for _, n := range s.Connections {
			st.Connections += n
		}
	}
	f.stats[id] = st
}

// beat heartbeats every node and publishes its stats, until ctx ends.
func (f *fakeNodes) run(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		f.mu.Lock()
		for id, st := range f.stats {
			_ = f.st.Heartbeat(ctx, id, store.Load{Connections: st.Connections}, time.Now())
			st.At = time.Now()
			_ = bus.PublishNodeStats(f.nc, f.subj, st)
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *fakeNodes) requests() ([]string, []bus.ControlRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ctlTo), slices.Clone(f.ctl)
}

func fastConfig(id string) balancer.Config {
	return balancer.Config{
		ID: id, Interval: 50 * time.Millisecond, Window: time.Second, StatsTimeout: 500 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond, Cooldown: time.Hour, LeaseTTL: 300 * time.Millisecond,
		Connections: balancer.ConnectionsPolicy{MaxPerNode: 100, Ratio: -1},
		Drain:       balancer.DrainConfig{Delay: time.Millisecond, Grace: time.Second},
	}
}

func start(t *testing.T, cfg balancer.Config, st store.Store, nc *nats.Conn) *balancer.Balancer {
	t.Helper()
	b, err := balancer.New(cfg, balancer.Deps{Store: st, NATS: nc, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	return b
}

// setup is a store with vacuum/free on n1, too many connections there, and
// n2 free.
func setup(t *testing.T) (store.Store, *nats.Conn, *fakeNodes) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	st := store.NewMemory()
	f := newFakeNodes(t, st, nc, "n1", "n2")
	if err := st.PutService(t.Context(), "vacuum", "free", []string{"free"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Assign(t.Context(), "vacuum", "free", "n1"); err != nil {
		t.Fatal(err)
	}
	f.conns("n1", "vacuum", "free", 300)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return st, nc, f
}

// A round changes the map in the store, announces it, publishes and logs
// the decision, and asks the nodes to move devices.
func TestRoundAppliesAndPublishes(t *testing.T) {
	st, nc, f := setup(t)
	decisions, err := nc.SubscribeSync(bus.MustSubjects("").BalancerDecisions())
	if err != nil {
		t.Fatal(err)
	}
	changes, err := nc.SubscribeSync(bus.MustSubjects("").MapChanged())
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, fastConfig("b1"), st, nc)
	m, err := decisions.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d, err := bus.ParseDecision(m.Data)
	if err != nil || d.Rule != bus.RuleConnections || d.Node != "n2" || !d.Applied || d.Balancer != "b1" || d.MapVersion == 0 {
		t.Fatalf("decision %s (%v)", m.Data, err)
	}
	mp, _ := st.Map(t.Context())
	if got := mp.Services["vacuum"].Tiers["free"]; !slices.Equal(got, []string{"n1", "n2"}) {
		t.Fatalf("vacuum/free = %v", got)
	}
	mc, err := changes.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bus.ParseMapChanged(mc.Data); err != nil || c.Source != bus.SourceBalancer || c.Version != mp.Version {
		t.Fatalf("map changed %s (%v), version %d", mc.Data, err, mp.Version)
	}
	// The rebalance drain reaches n1: 150 of its 300 connections, both
	// the tier's and those without a tier (free is the default tier).
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		to, reqs := f.requests()
		if len(reqs) != 1 {
			return fmt.Errorf("requests %v", reqs)
		}
		r := reqs[0]
		if to[0] != "n1" || r.Op != bus.OpDrain || r.Service != "vacuum" || r.Count != 150 || !slices.Equal(r.Tiers, []string{"free", ""}) || r.Rate != 200 {
			return fmt.Errorf("request to %s: %+v", to[0], r)
		}
		return nil
	})
	recs, err := st.Records(t.Context(), store.LogDecisions, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("decision log %q, %v", recs, err)
	}
	var logged bus.Decision
	if err := json.Unmarshal(recs[0], &logged); err != nil || logged.Change != d.Change {
		t.Fatalf("logged %s", recs[0])
	}
	if s := b.Status(); !s.IsLeader || s.Leader != "b1" || s.Decisions != 1 || s.Moves != 2 || s.Last == nil {
		t.Fatalf("status %+v", s)
	}
}

// A dry run publishes what it would do and changes nothing.
func TestDryRun(t *testing.T) {
	st, nc, f := setup(t)
	decisions, err := nc.SubscribeSync(bus.MustSubjects("").BalancerDecisions())
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig("dry")
	cfg.DryRun = true
	start(t, cfg, st, nc)
	m, err := decisions.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := bus.ParseDecision(m.Data)
	if !d.DryRun || d.Applied || len(d.Moves) == 0 {
		t.Fatalf("decision %s", m.Data)
	}
	mp, _ := st.Map(t.Context())
	if got := mp.Services["vacuum"].Tiers["free"]; !slices.Equal(got, []string{"n1"}) {
		t.Fatalf("dry run changed vacuum/free to %v", got)
	}
	if _, reqs := f.requests(); len(reqs) != 0 {
		t.Fatalf("dry run sent %v", reqs)
	}
}

// One balancer leads at a time; when it stops, the other takes over within
// the lease's lifetime and acts; a leader whose lease another took cannot
// write and steps down.
func TestLeaderFailoverAndFencing(t *testing.T) {
	st, nc, _ := setup(t)
	cfg := fastConfig("a")
	cfg.Interval, cfg.Window = time.Hour, time.Hour // no rounds: this is about leadership
	a := start(t, cfg, st, nc)
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !a.Status().IsLeader {
			return errors.New("a does not lead")
		}
		return nil
	})
	cfg.ID = "b"
	bb := start(t, cfg, st, nc)
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := bb.Status(); s.IsLeader || s.Leader != "a" {
			return fmt.Errorf("b: %+v", s)
		}
		return nil
	})
	// a stops (as a killed one would, but without releasing: the lease
	// must expire) — here it releases; the takeover is then at once.
	stopped := time.Now()
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !bb.Status().IsLeader {
			return errors.New("b does not lead")
		}
		return nil
	})
	if took := time.Since(stopped); took > cfg.LeaseTTL+cfg.LeaseTTL/3+time.Second {
		t.Errorf("takeover took %v", took)
	}
	// Someone takes b's lease (as if b had been paused past its TTL): b's
	// next write is refused, and b steps down.
	l, err := st.LeaseHolder(t.Context(), store.LeaseBalancer)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ReleaseLease(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	thief, err := st.AcquireLease(t.Context(), store.LeaseBalancer, "thief", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.ApplyChanges(t.Context(), l, 0, []store.Change{{Node: "n2", State: store.StateSleep}})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("write with b's old lease: %v", err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := bb.Status(); s.IsLeader || s.Leader != "thief" {
			return fmt.Errorf("b after losing its lease: %+v", s)
		}
		return nil
	})
	_ = st.ReleaseLease(t.Context(), thief)
}

// Cold standby: the start command runs for the woken node and its outcome
// is reported as a decision.
func TestColdStandbyCommand(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	st := store.NewMemory()
	f := newFakeNodes(t, st, nc, "n1")
	ctx := t.Context()
	if err := st.PutNode(ctx, store.Node{ID: "cold1", URL: "ws://cold1/ws", State: store.StateStandby}); err != nil {
		t.Fatal(err)
	}
	if err := st.PutService(ctx, "vacuum", "free", nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Assign(ctx, "vacuum", "free", "n1"); err != nil {
		t.Fatal(err)
	}
	f.conns("n1", "vacuum", "free", 300)
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.run(rctx) }()
	defer func() { cancel(); <-done }()
	decisions, err := nc.SubscribeSync(bus.MustSubjects("").BalancerDecisions())
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan []string, 1)
	cfg := fastConfig("b")
	cfg.Standby = balancer.StandbyConfig{Start: []string{"start-node", "--id", "{node}"}}
	b, err := balancer.New(cfg, balancer.Deps{Store: st, NATS: nc, Log: quiet, RunCommand: func(_ context.Context, argv []string) ([]byte, error) {
		ran <- argv
		return []byte("started"), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	select {
	case argv := <-ran:
		if !slices.Equal(argv, []string{"start-node", "--id", "cold1"}) {
			t.Fatalf("ran %q", argv)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("start command not run")
	}
	var wake, report bool
	testutil.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		m, err := decisions.NextMsg(time.Second)
		if err != nil {
			return err
		}
		d, _ := bus.ParseDecision(m.Data)
		for _, mv := range d.Moves {
			wake = wake || (mv.Kind == bus.MoveWake && mv.Node == "cold1" && mv.How == "cold")
		}
		report = report || (d.Rule == balancer.RuleStandby && d.Applied && d.Node == "cold1")
		if !wake || !report {
			return fmt.Errorf("wake %v, report %v", wake, report)
		}
		return nil
	})
	if n, _ := st.Node(ctx, "cold1"); n.State != store.StateActive {
		t.Fatalf("cold1 state %s: want active before it starts", n.State)
	}
}
