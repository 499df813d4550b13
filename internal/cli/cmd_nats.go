package cli

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/tetherhq/tether/bus/natsserver"
	"github.com/tetherhq/tether/internal/config"
)

func init() {
	register("nats", "run a NATS server (the one embedded in tether) for nodes and apps", runNATS)
}

const natsHelp = `Runs the NATS server embedded in tether (nats-server, as a library) until
SIGINT or SIGTERM: enough for a node, the directory and apps on one machine or
a small cluster, with no other binary to install.

The first line on stdout is the URL clients connect to (nats://HOST:PORT),
so that scripts can start it with a free port and read where it listens:

    url=$(tether nats --port 0 --http-port -1 | head -1)

Where the monitoring endpoints and the cluster port listen goes to stderr.

With a system user (--system-user and --system-password, or the
nats_server.system_account section of --config), the server's system
account lets operators' tools see it whole: nats server report, nats server
list, nats-surveyor. Clients without credentials (or with --user) keep
working as before, in an account of their own.
`

func runNATS(ctx context.Context, io IO, args []string) error {
	fs := newFlags(io, "nats", "[--host 127.0.0.1] [--port 4222] [--http-port 8222] [--cluster-port N --routes URL,...]")
	usage := fs.Usage
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), natsHelp+"\n")
		usage()
	}
	host := fs.String("host", "127.0.0.1", "address to listen on, for clients, monitoring and routes")
	port := fs.Int("port", 4222, "client port (0: any free port)")
	httpPort := fs.Int("http-port", 8222, "monitoring port, for /varz /connz /subsz (0: any free port; -1: no monitoring)")
	clusterPort := fs.Int("cluster-port", -1, "cluster (route) port, to join other servers into a cluster (0: any free port; -1: no cluster)")
	clusterName := fs.String("cluster-name", "tether", "cluster name; every server of a cluster needs the same")
	name := fs.String("name", "", "server name shown in monitoring and to other servers (default: generated)")
	user := fs.String("user", "", "user every client must give (with --password)")
	password := fs.String("password", "", "password every client must give (with --user)")
	maxPayload := fs.Int("max-payload", 0, "largest message accepted, in bytes (default 1 MiB)")
	logs := fs.Bool("log", false, "write the server's own log to stderr")
	cfgPath := fs.String("config", "", "configuration file whose nats_server section gives the system account (flags override it)")
	sysUser := fs.String("system-user", "", "user of the NATS system account, for nats server report and nats-surveyor (with --system-password)")
	sysPassword := fs.String("system-password", "", "password of the system account's user")
	var routes stringList
	fs.Var(&routes, "routes", "nats-route:// URLs of other servers of the cluster (repeatable, or comma-separated; needs --cluster-port)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *port < 0 || *port > 65535 || *httpPort < -1 || *httpPort > 65535 || *clusterPort < -1 || *clusterPort > 65535 {
		fmt.Fprintln(io.Stderr, "ports are 0 (any free port) to 65535; --http-port and --cluster-port also take -1 (off)")
		fs.Usage()
		return errUsage
	}
	if len(routes) > 0 && *clusterPort < 0 {
		fmt.Fprintln(io.Stderr, "--routes needs --cluster-port")
		fs.Usage()
		return errUsage
	}
	if (*user == "") != (*password == "") {
		fmt.Fprintln(io.Stderr, "--user and --password go together")
		fs.Usage()
		return errUsage
	}
	if (*sysUser == "") != (*sysPassword == "") {
		fmt.Fprintln(io.Stderr, "--system-user and --system-password go together")
		fs.Usage()
		return errUsage
	}
	var sys natsserver.SystemAccount
	if *cfgPath != "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		sys = cfg.NATSServer.SystemAccount
	}
	if *sysUser != "" {
		sys = natsserver.SystemAccount{User: *sysUser, Password: *sysPassword}
	}
	if *maxPayload < 0 || *maxPayload > 64<<20 {
		fmt.Fprintln(io.Stderr, "--max-payload: 0 (default) to 64 MiB")
		fs.Usage()
		return errUsage
	}
	log, err := commandLogger(fs)
	if err != nil {
		return err
	}
	sc := natsserver.Config{
		Listen:      listenAddr(*host, *port),
		HTTPListen:  listenAddr(*host, *httpPort),
		ClusterName: *clusterName, ClusterListen: listenAddr(*host, *clusterPort), Routes: routes,
		ServerName: *name, MaxPayload: int32(*maxPayload), User: *user, Password: *password, Logs: *logs,
		SystemAccount: sys,
	}
	s, err := natsserver.Start(sc, log)
	if err != nil {
		return err
	}
	defer s.Shutdown()
	fmt.Fprintln(io.Stdout, s.ClientURL())
	fmt.Fprintf(io.Stderr, "tether nats: clients %s", s.ClientURL())
	if u := s.MonitorURL(); u != "" {
		fmt.Fprintf(io.Stderr, ", monitoring %s/varz", u)
	}
	if u := s.RouteURL(); u != "" {
		fmt.Fprintf(io.Stderr, ", routes %s", u)
	}
	if sys.User != "" {
		fmt.Fprintf(io.Stderr, ", system account user %q", sys.User)
	}
	fmt.Fprintln(io.Stderr, "; SIGINT or SIGTERM stops it")
	<-ctx.Done()
	return nil
}

// listenAddr turns a port flag (0 any free port, -1 off) into a listen
// address ("" for off).
func listenAddr(host string, port int) string {
	if port < 0 {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
