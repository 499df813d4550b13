package cli

import (
	"context"
	"time"

	"github.com/tetherhq/tether/internal/process"
)

func init() {
	register("directory", "run the directory (node lists for devices, admin API) against Redis", runDirectory)
}

func runDirectory(ctx context.Context, io IO, args []string) error {
	fs := newFlags(io, "directory", "--config FILE [--listen ADDR] [--nats URL] [--redis URL] [--seed]")
	sf := addServerFlags(fs)
	listen := fs.String("listen", "", "HTTP listen address (overrides directory.listen)")
	seed := fs.Bool("seed", false, "apply the configuration's seed section to the store at start")
	ui := fs.Bool("ui", true, "serve the live cluster page at /ui/ (--ui=false: none; overrides directory.disable_ui when false)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, log, err := sf.load(io, fs)
	if err != nil {
		return err
	}
	env := process.Env{Config: cfg, Log: log}
	dcfg := process.DirectoryConfig(env)
	if *listen != "" {
		dcfg.Listen = *listen
	}
	if !*ui {
		dcfg.DisableUI = true
	}
	p, err := process.NewDirectory(env, dcfg, *seed)
	if err != nil {
		return err
	}
	return process.Run(ctx, p, 10*time.Second)
}
