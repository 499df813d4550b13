package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/internal/loadgen"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// WorkerConfig configures one load worker (`tether bench-load`).
type WorkerConfig struct {
	// NATSURL is where the orchestrator's control requests come from.
	NATSURL string
	// Run names the bench run (the control subjects' second token).
	Run string
	// Index is the worker's number, 0-based.
	Index int
	// NodeURL is the ws:// URL of the node.
	NodeURL string
	// Service of the devices, and Secret, the HMAC key their tokens are
	// signed with.
	Service, Secret string
	// First and Count: the worker runs devices First .. First+Count-1.
	First, Count int
	// SourceIPs: device i connects from SourceIPs[i % len] (round robin
	// over the global device index). Empty: the system's choice.
	SourceIPs []net.IP
	// DialConcurrency is the number of connection attempts in progress at
	// once. Default 250.
	DialConcurrency int
	// Log receives the worker's logs. Default: discard.
	Log *slog.Logger
}

// DeviceID names device i of a bench.
func DeviceID(i int) string { return fmt.Sprintf("bench-%06d", i) }

// fdMargin is the open files a worker or the node needs besides its
// devices' sockets (NATS, epoll, stdio, listeners...).
const fdMargin = 64

// RunWorker runs a load worker until ctx ends: it builds its devices (one
// token each), connects to NATS, and on the orchestrator's "connect"
// request starts the devices, at most DialConcurrency connecting at once.
// Every device acks its pushes with "ok" at once (simulator Lean mode).
func RunWorker(ctx context.Context, c WorkerConfig) error {
	if c.DialConcurrency <= 0 {
		c.DialConcurrency = 250
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Count <= 0 || c.NodeURL == "" || c.NATSURL == "" || c.Run == "" || c.Service == "" {
		return errors.New("bench: worker needs --count, --node, --nats, --run and --service")
	}
	soft, hard, err := loadgen.RaiseNoFile()
	if err != nil {
		return err
	}
	if need := uint64(c.Count + fdMargin); soft < need {
		return fmt.Errorf("bench: worker %d needs %d open files for %d connections, but the limit is %d (hard %d): raise it (ulimit -n) or use more workers",
			c.Index, need, c.Count, soft, hard)
	}
	kr, err := token.NewKeyring(map[string][]token.Key{c.Service: {{ID: c.Service, HMACSecret: c.Secret}}})
	if err != nil {
		return fmt.Errorf("bench: worker key: %w", err)
	}
	devs := make([]*simulator.Device, c.Count)
	for i := range devs {
		g := c.First + i
		tok, err := kr.Issue(c.Service, DeviceID(g), token.IssueOptions{TTL: 24 * time.Hour})
		if err != nil {
			return fmt.Errorf("bench: token: %w", err)
		}
		dc := simulator.DeviceConfig{
			Service: c.Service, Token: tok, Nodes: []string{c.NodeURL}, Lean: true,
			MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, DialTimeout: 10 * time.Second,
		}
		if len(c.SourceIPs) > 0 {
			dc.LocalAddr = c.SourceIPs[g%len(c.SourceIPs)]
		}
		if devs[i], err = simulator.NewDevice(dc); err != nil {
			return err
		}
	}

	nc, err := nats.Connect(c.NATSURL, nats.Name(fmt.Sprintf("tether-bench-load-%d", c.Index)), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("bench: worker NATS: %w", err)
	}
	defer nc.Close()

	w := &worker{cfg: c, devs: devs, pid: os.Getpid()}
	dctx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	var started sync.Once
	subs := []struct {
		verb string
		fn   func(m *nats.Msg)
	}{
		{verbStats, func(m *nats.Msg) { _ = m.Respond(w.statsJSON()) }},
		{verbConnect, func(m *nats.Msg) {
			started.Do(func() {
				w.started.Store(true)
				w.wg.Add(1)
				go func() {
					defer w.wg.Done()
					w.launch(dctx)
				}()
			})
			_ = m.Respond(w.statsJSON())
		}},
	}
	for _, s := range subs {
		if _, err := nc.Subscribe(controlSubject(c.Run, s.verb), s.fn); err != nil {
			return fmt.Errorf("bench: worker subscribe: %w", err)
		}
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return fmt.Errorf("bench: worker NATS flush: %w", err)
	}
	c.Log.Debug("worker ready", "index", c.Index, "devices", c.Count)
	<-ctx.Done()
	stopDevices()
	done := make(chan struct{})
	go func() {
		w.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
	}
	return nil
}

type worker struct {
	cfg     WorkerConfig
	devs    []*simulator.Device
	pid     int
	started atomic.Bool
	stopped atomic.Int64
	wg      sync.WaitGroup
}

// launch starts every device, keeping at most DialConcurrency of them
// between their first dial and their welcome (or a dial timeout).
func (w *worker) launch(ctx context.Context) {
	sem := make(chan struct{}, w.cfg.DialConcurrency)
	for _, d := range w.devs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		w.wg.Add(2)
		go func() {
			defer w.wg.Done()
			if err := d.Run(ctx); err != nil && ctx.Err() == nil {
				w.stopped.Add(1)
				w.cfg.Log.Warn("device stopped", "err", err)
			}
		}()
		go func() {
			defer w.wg.Done()
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, _ = d.WaitConnected(wctx)
			cancel()
			<-sem
		}()
	}
}

func (w *worker) stats() WorkerStats {
	s := WorkerStats{Index: w.cfg.Index, PID: w.pid, Devices: len(w.devs), Started: w.started.Load(), Stopped: w.stopped.Load()}
	for _, d := range w.devs {
		if _, ok := d.Welcome(); ok {
			s.Connected++
		}
		ds := d.Stats()
		s.Connects += ds.Connects
		s.Reconnects += ds.Reconnects
		s.Pushes += ds.Pushes
		s.Acks += ds.Acks
	}
	return s
}

func (w *worker) statsJSON() []byte {
	b, _ := json.Marshal(w.stats())
	return b
}
