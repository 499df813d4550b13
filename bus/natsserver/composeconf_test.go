package natsserver_test

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver"
)

// docker-compose.yml's NATS configuration, run by a real nats-server:
// tether's processes and apps log in as their own users, whose permissions
// are exactly those natsserver generates for configs/compose.yaml's
// services; anonymous clients are refused; and the system account's user
// sees the server (what nats server report and nats-surveyor need).
func TestComposeNATSConfig(t *testing.T) {
	t.Setenv("NATS_SYSTEM_PASSWORD", "compose-test-password")
	vars := map[string]string{}
	for _, v := range []string{"NATS_NODE_PASSWORD", "NATS_DIRECTORY_PASSWORD", "NATS_BALANCER_PASSWORD", "NATS_OPERATOR_PASSWORD",
		"NATS_APP_VACUUM_PASSWORD", "NATS_APP_AIRCON_PASSWORD"} {
		vars[v] = "pw-" + strings.ToLower(v)
		t.Setenv(v, vars[v])
	}
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "configs", "nats", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if opts.SystemAccount != "SYS" || opts.NoAuthUser != "" || opts.HTTPPort != 8222 {
		t.Fatalf("system account %q, no_auth_user %q, http_port %d", opts.SystemAccount, opts.NoAuthUser, opts.HTTPPort)
	}
	// The users are the generated ones.
	services := []string{"aircon", "vacuum"}
	subj := bus.MustSubjects("")
	got := map[string]*server.User{}
	for _, u := range opts.Users {
		got[u.Username] = u
	}
	for _, tc := range []struct{ user, role, service, v string }{
		{"tether-node", natsserver.RoleNode, "", "NATS_NODE_PASSWORD"},
		{"tether-directory", natsserver.RoleDirectory, "", "NATS_DIRECTORY_PASSWORD"},
		{"tether-balancer", natsserver.RoleBalancer, "", "NATS_BALANCER_PASSWORD"},
		{"tether-operator", natsserver.RoleOperator, "", "NATS_OPERATOR_PASSWORD"},
		{"app-vacuum", natsserver.RoleApp, "vacuum", "NATS_APP_VACUUM_PASSWORD"},
		{"app-aircon", natsserver.RoleApp, "aircon", "NATS_APP_AIRCON_PASSWORD"},
	} {
		u := got[tc.user]
		want, err := natsserver.Permissions(tc.role, subj, tc.service, services)
		if err != nil {
			t.Fatal(err)
		}
		if u == nil || u.Account == nil || u.Account.Name != "TETHER" || u.Password != vars[tc.v] || u.Permissions == nil ||
			!slices.Equal(u.Permissions.Publish.Allow, want.Publish) || !slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe) {
			t.Fatalf("user %s in configs/nats/nats.conf is not the generated one (regenerate it: tether nats --config configs/compose.yaml --print-auth --password-vars): %+v", tc.user, u)
		}
		if natsserver.PasswordVar(tc.role, tc.service) != tc.v {
			t.Fatalf("PasswordVar(%s, %s) = %s", tc.role, tc.service, natsserver.PasswordVar(tc.role, tc.service))
		}
	}
	opts.Host, opts.Port, opts.HTTPPort, opts.NoSigs, opts.NoLog = "127.0.0.1", server.RANDOM_PORT, 0, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	defer s.Shutdown()
	if c, err := nats.Connect(s.ClientURL()); err == nil {
		c.Close()
		t.Fatal("a client without credentials got in")
	}
	app, err := nats.Connect(s.ClientURL(), nats.UserInfo("app-vacuum", vars["NATS_APP_VACUUM_PASSWORD"]))
	if err != nil {
		t.Fatalf("the vacuum app: %v", err)
	}
	defer app.Close()
	sys, err := nats.Connect(s.ClientURL(), nats.UserInfo("sys", "compose-test-password"))
	if err != nil {
		t.Fatalf("the system user: %v", err)
	}
	defer sys.Close()
	m, err := sys.Request("$SYS.REQ.SERVER.PING", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ping struct {
		Server struct {
			Name string `json:"name"`
		} `json:"server"`
	}
	if err := json.Unmarshal(m.Data, &ping); err != nil || ping.Server.Name != "nats-1" {
		t.Fatalf("ping = %s (%v)", m.Data, err)
	}
}
