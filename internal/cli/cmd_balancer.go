package cli

import (
	"context"
	"time"

	"github.com/tetherhq/tether/internal/process"
)

func init() {
	register("balancer", "run the balancer: moves services between nodes, wakes and sleeps standby nodes", runBalancer)
}

func runBalancer(ctx context.Context, io IO, args []string) error {
	fs := newFlags(io, "balancer", "--config FILE [--nats URL] [--redis URL] [--dry-run] [--id ID]")
	sf := addServerFlags(fs)
	dryRun := fs.Bool("dry-run", false, "only publish decisions; change nothing (overrides balancer.dry_run)")
	id := fs.String("id", "", "this balancer's ID in the leader lease and its decisions (overrides balancer.id)")
	metrics := fs.String("metrics-listen", "", "serve /metrics and /healthz here (overrides balancer.metrics_listen)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, log, err := sf.load(io, fs)
	if err != nil {
		return err
	}
	bcfg := cfg.Balancer
	if *dryRun {
		bcfg.DryRun = true
	}
	if *id != "" {
		bcfg.ID = *id
	}
	if *metrics != "" {
		bcfg.MetricsListen = *metrics
	}
	p, err := process.NewBalancer(process.Env{Config: cfg, Log: log}, bcfg)
	if err != nil {
		return err
	}
	return process.Run(ctx, p, 10*time.Second)
}
