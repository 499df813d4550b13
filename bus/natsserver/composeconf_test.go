package natsserver_test

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// docker-compose.yml's NATS configuration, run by a real nats-server: tether's
// clients get in without credentials, and the system account's user sees
// the server (what nats server report and nats-surveyor need).
func TestComposeNATSConfig(t *testing.T) {
	t.Setenv("NATS_SYSTEM_PASSWORD", "compose-test-password")
	opts, err := server.ProcessConfigFile(filepath.Join("..", "..", "configs", "nats", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if opts.SystemAccount != "SYS" || opts.NoAuthUser != "tether" || opts.HTTPPort != 8222 {
		t.Fatalf("system account %q, no_auth_user %q, http_port %d", opts.SystemAccount, opts.NoAuthUser, opts.HTTPPort)
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
	app, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("a client without credentials: %v", err)
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
