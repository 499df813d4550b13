package cli

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/telemetry"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

func init() {
	register("simulate", "run simulated appliances against a running cluster", runSimulate)
}

func runSimulate(ctx context.Context, io IO, args []string) error {
	fs := newFlags(io, "simulate", "(--directory URL | --nodes ws://...) [--service S]... [--devices N] [--config FILE]")
	dirURL := fs.String("directory", "", "directory base URL (default: a running tether dev's)")
	var nodes stringList
	fs.Var(&nodes, "nodes", "fixed node URLs (ws://...), tried in order, instead of asking a directory (repeatable or comma-separated)")
	devices := fs.Int("devices", 100, "number of appliances")
	prefix := fs.String("id-prefix", "", "prefix of device IDs (default: the service name)")
	rate := fs.Int("connect-rate", 1000, "new connections per second at start (0: no cap)")
	upstream := fs.Duration("upstream-every", 0, "each appliance sends telemetry about this often (0: never)")
	sources := fs.String("source-ips", "", "spread connections over these local source addresses, e.g. 127.0.0.2-127.0.0.9")
	cfgPath := fs.String("config", "", "configuration file with the service keys to mint tokens (default: built-in dev configuration)")
	ttl := fs.Duration("token-ttl", 24*time.Hour, "lifetime of the minted tokens")
	duration := fs.Duration("duration", 0, "stop after this long (default: until Ctrl-C)")
	metricsListen := fs.String("metrics-listen", "", "serve the appliances' Prometheus metrics (tether_simulator_*) on this address's /metrics while they run")
	var services stringList
	fs.Var(&services, "service", "service the appliances use (repeatable; default: every configured service)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dirURL == "" && len(nodes) == 0 {
		if s, ok := readDevState(io); ok {
			*dirURL = s.DirectoryURL
		} else {
			fmt.Fprintln(io.Stderr, "--directory or --nodes is required (no running tether dev found)")
			fs.Usage()
			return errUsage
		}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	kr, err := cfg.Keyring()
	if err != nil {
		return err
	}
	if len(services) == 0 {
		services = kr.Services()
	}
	ips, err := parseIPRange(*sources)
	if err != nil {
		return err
	}
	fc := simulator.FleetConfig{
		Devices: *devices, Services: services, DirectoryURL: *dirURL, Nodes: nodes, ConnectRate: *rate,
		SourceIPs: ips, UpstreamEvery: *upstream,
		Token: func(_ context.Context, service, device string) (string, error) {
			return kr.Issue(service, device, token.IssueOptions{TTL: *ttl})
		},
	}
	if *prefix != "" {
		fc.DeviceID = func(service string, i int) string { return fmt.Sprintf("%s-%s-%06d", *prefix, service, i) }
	}
	f, err := simulator.NewFleet(fc)
	if err != nil {
		return err
	}
	if *metricsListen != "" {
		reg := telemetry.NewRegistry("simulator")
		reg.MustRegister(telemetry.NewFleetCollector(func() []simulator.FleetStats { return []simulator.FleetStats{f.Stats()} }))
		ms, err := telemetry.Serve(*metricsListen, reg, slog.Default())
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			ms.Shutdown(sctx)
		}()
		fmt.Fprintf(io.Stderr, "metrics %s\n", ms.URL())
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			s := f.Stats()
			fmt.Fprintf(io.Stdout, "devices %d, connected at end %d, connects %d, reconnects %d, pushes %d, acks %d, sent %d, stopped %d\n",
				s.Devices, s.Connected, s.Connects, s.Reconnects, s.Pushes, s.Acks, s.Sent, s.Stopped)
			return nil
		case <-t.C:
			s := f.Stats()
			fmt.Fprintf(io.Stderr, "connected %d/%d | pushes %d | acks %d | reconnects %d\n", s.Connected, s.Devices, s.Pushes, s.Acks, s.Reconnects)
		}
	}
}

// parseIPRange parses "", "A", "A,B,C" or "A-B" (last octet range) into addresses.
func parseIPRange(s string) ([]net.IP, error) {
	if s == "" {
		return nil, nil
	}
	var out []net.IP
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a := net.ParseIP(lo).To4()
		if a == nil {
			return nil, fmt.Errorf("--source-ips: %q is not an IPv4 address", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b := net.ParseIP(hi).To4()
		if b == nil || !bytes.Equal(a[:3], b[:3]) || b[3] < a[3] {
			return nil, fmt.Errorf("--source-ips: bad range %q (use A-B within one /24)", part)
		}
		for o := int(a[3]); o <= int(b[3]); o++ {
			out = append(out, net.IPv4(a[0], a[1], a[2], byte(o)).To4())
		}
	}
	return out, nil
}
