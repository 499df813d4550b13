package cli

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/internal/process"
)

func init() {
	register("directory", "run the directory (node lists for devices, admin API) against Redis", runDirectory)
	register("admin", "manage services, tiers, nodes and clients through the directory's admin API", runAdmin)
}

func runDirectory(ctx context.Context, io IO, args []string) error {
	fs := newFlags(io, "directory", "--config FILE [--listen ADDR] [--nats URL] [--redis URL] [--seed]")
	sf := addServerFlags(fs)
	listen := fs.String("listen", "", "HTTP listen address (overrides directory.listen)")
	seed := fs.Bool("seed", false, "apply the configuration's seed section to the store at start")
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
	p, err := process.NewDirectory(env, dcfg, *seed)
	if err != nil {
		return err
	}
	return process.Run(ctx, p, 10*time.Second)
}

func runAdmin(ctx context.Context, io IO, args []string) error {
	// With neither --url nor $TETHER_DIRECTORY_URL, talk to a running
	// tether dev, with its admin token; its token never goes anywhere else.
	urlGiven := io.Getenv("TETHER_DIRECTORY_URL") != "" || adminURLFlag(args)
	if s, ok := readDevState(io); ok && !urlGiven {
		_ = os.Setenv("TETHER_DIRECTORY_URL", s.DirectoryURL)
		if io.Getenv("TETHER_ADMIN_TOKEN") == "" {
			_ = os.Setenv("TETHER_ADMIN_TOKEN", s.AdminToken)
		}
	}
	err := directory.AdminCommand(ctx, args, io.Stdout, io.Stderr)
	if errors.Is(err, directory.ErrUsage) {
		return errUsage
	}
	if err != nil {
		// AdminCommand's errors already say "tether admin: ".
		return errors.New(strings.TrimPrefix(err.Error(), "tether admin: "))
	}
	return nil
}

// adminURLFlag reports whether the global flags of `tether admin` (those
// before its subcommand) name a directory with --url.
func adminURLFlag(args []string) bool {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			return false // the subcommand: its own --url is another flag
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "url" {
			return true
		}
		if (name == "token" || name == "timeout") && !hasValue {
			i++ // skip its value
		}
	}
	return false
}
