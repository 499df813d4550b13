package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/tetherhq/tether/bus/natsserver"
)

func init() {
	register("nats", "run a NATS server (the one embedded in tether) for nodes and apps", runNATS)
}

const natsHelp = `Runs the NATS server embedded in tether (nats-server, as a library) until
SIGINT or SIGTERM: enough for a node, the directory and apps on one machine or
a small cluster, with no other binary to install.

The first line on stdout is the URL clients connect to (nats://HOST:PORT, or
tls://HOST:PORT with TLS), so that scripts can start it with a free port and
read where it listens:

    url=$(tether nats --port 0 --http-port -1 | head -1)

Where the monitoring endpoints and the cluster port listen goes to stderr.

With --config, the nats_server section of a tether configuration sets the
listeners, TLS (tls, cluster_tls), route authentication (cluster_user,
cluster_password), the system account, and, in nats_server.auth, one user
per role of the deployment (node, directory, balancer, operator, and one
per service's app servers) with permissions generated from the file: an app
may push only to its own service and read only its own service's messages,
events and receipts (docs/security.md). Flags given on the command line win
over the file. --print-auth prints those users for a nats-server configuration (for
your own nats-server: put them in an authorization block or an account) and
exits; with --password-vars their passwords are $NATS_<ROLE>_PASSWORD
references (NATS_APP_<SERVICE>_PASSWORD for apps).

With a system user (--system-user and --system-password, or the
nats_server.system_account section of --config), the server's system
account lets operators' tools see it whole: nats server report, nats server
list, nats-surveyor. tether's clients (anonymous, --user, or the users of
nats_server.auth) live in an account of their own.
`

func runNATS(ctx context.Context, io IO, args []string) error {
	fs := newFlags(io, "nats", "[--config FILE [--print-auth]] [--host 127.0.0.1] [--port 4222] [--http-port 8222] [--cluster-port N --routes URL,...] [--tls-cert F --tls-key F]")
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
	cfgPath := fs.String("config", "", "tether configuration whose nats_server section (listeners, TLS, route authentication, system account, per-role users) applies; flags win")
	printAuth := fs.Bool("print-auth", false, "with --config: print nats_server.auth as the users of a nats-server configuration, and exit")
	passwordVars := fs.Bool("password-vars", false, "with --print-auth: write the passwords as $NATS_<ROLE>_PASSWORD references for nats-server to resolve")
	sysUser := fs.String("system-user", "", "user of the NATS system account, for nats server report and nats-surveyor (with --system-password)")
	sysPassword := fs.String("system-password", "", "password of the system account's user")
	tlsCert := fs.String("tls-cert", "", "PEM certificate for TLS to clients (with --tls-key)")
	tlsKey := fs.String("tls-key", "", "PEM key of --tls-cert")
	tlsCA := fs.String("tls-ca", "", "PEM CAs that sign client (and route) certificates")
	tlsVerify := fs.Bool("tls-verify", false, "require client certificates signed by --tls-ca")
	clusterUser := fs.String("cluster-user", "", "user the other servers' routes must give (with --cluster-password)")
	clusterPassword := fs.String("cluster-password", "", "password of --cluster-user")
	var routes stringList
	fs.Var(&routes, "routes", "nats-route:// URLs of other servers of the cluster (repeatable, or comma-separated; needs --cluster-port)")
	if err := parse(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	bad := func(msg string) error {
		fmt.Fprintln(io.Stderr, msg)
		fs.Usage()
		return errUsage
	}
	switch {
	case *port < 0 || *port > 65535 || *httpPort < -1 || *httpPort > 65535 || *clusterPort < -1 || *clusterPort > 65535:
		return bad("ports are 0 (any free port) to 65535; --http-port and --cluster-port also take -1 (off)")
	case len(routes) > 0 && *clusterPort < 0 && *cfgPath == "":
		return bad("--routes needs --cluster-port")
	case (*user == "") != (*password == ""):
		return bad("--user and --password go together")
	case (*sysUser == "") != (*sysPassword == ""):
		return bad("--system-user and --system-password go together")
	case (*clusterUser == "") != (*clusterPassword == ""):
		return bad("--cluster-user and --cluster-password go together")
	case (*tlsCert == "") != (*tlsKey == "") || (*tlsVerify && *tlsCA == ""):
		return bad("--tls-cert and --tls-key go together; --tls-verify needs --tls-ca")
	case *printAuth && *cfgPath == "":
		return bad("--print-auth needs --config")
	case *maxPayload < 0 || *maxPayload > 64<<20:
		return bad("--max-payload: 0 (default) to 64 MiB")
	}
	var sc natsserver.Config
	if *cfgPath != "" {
		f, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		if sc, err = f.NATSServerConfig(); err != nil {
			return err
		}
		if *printAuth {
			if sc.Auth == nil {
				return fmt.Errorf("%s: no nats_server.auth section", *cfgPath)
			}
			text, err := sc.Auth.ConfigText(sc.Subjects, sc.Services, *passwordVars)
			if err != nil {
				return err
			}
			fmt.Fprint(io.Stdout, text)
			return nil
		}
	}
	// Flags given win; without a file, every flag applies.
	flagged := func(name string) bool { return set[name] || *cfgPath == "" }
	if flagged("host") || flagged("port") || sc.Listen == "" {
		sc.Listen = listenAddr(*host, *port)
	}
	if flagged("host") || flagged("http-port") {
		sc.HTTPListen = listenAddr(*host, *httpPort)
	}
	if flagged("host") || flagged("cluster-port") {
		sc.ClusterListen = listenAddr(*host, *clusterPort)
	}
	if flagged("cluster-name") || sc.ClusterName == "" {
		sc.ClusterName = *clusterName
	}
	if set["routes"] {
		sc.Routes = routes
	}
	if flagged("name") {
		sc.ServerName = *name
	}
	if flagged("max-payload") {
		sc.MaxPayload = int32(*maxPayload)
	}
	if set["user"] {
		sc.User, sc.Password = *user, *password
	}
	if set["system-user"] {
		sc.SystemAccount = natsserver.SystemAccount{User: *sysUser, Password: *sysPassword}
	}
	if set["tls-cert"] {
		sc.TLS = natsserver.TLSConfig{CertFile: *tlsCert, KeyFile: *tlsKey, CAFile: *tlsCA, Verify: *tlsVerify}
	}
	if set["cluster-user"] {
		sc.ClusterUser, sc.ClusterPassword = *clusterUser, *clusterPassword
	}
	sc.Logs = sc.Logs || *logs
	if len(sc.Routes) > 0 && sc.ClusterListen == "" {
		return bad("routes need a cluster port (--cluster-port or nats_server.cluster_listen)")
	}
	log, err := commandLogger(fs)
	if err != nil {
		return err
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
		fmt.Fprintf(io.Stderr, ", routes %s", redactURL(u))
	}
	if sc.SystemAccount.User != "" {
		fmt.Fprintf(io.Stderr, ", system account user %q", sc.SystemAccount.User)
	}
	if sc.Auth != nil {
		fmt.Fprintf(io.Stderr, ", per-role users for services %s", strings.Join(sc.Services, ", "))
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

// redactURL hides the password of a URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	return u.String()
}
