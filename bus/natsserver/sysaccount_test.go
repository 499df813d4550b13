package natsserver_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus/natsserver"
)

// With a system user, operators' tools see the server through the system
// account, and tether's clients keep working as before: without
// credentials, or with the configured user, in an account of their own
// that does not see the system's subjects.
func TestSystemAccount(t *testing.T) {
	for _, tc := range []struct {
		name       string
		user, pass string
	}{{"anonymous clients", "", ""}, {"clients with a user", "app", "app-password"}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := natsserver.Start(natsserver.Config{
				Listen: "127.0.0.1:0", ServerName: "sys-test", User: tc.user, Password: tc.pass,
				SystemAccount: natsserver.SystemAccount{User: "sys", Password: "sys-password"},
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Shutdown)
			sys, err := nats.Connect(s.ClientURL(), nats.UserInfo("sys", "sys-password"))
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Close()
			// What `nats server list` asks.
			m, err := sys.Request("$SYS.REQ.SERVER.PING", nil, 5*time.Second)
			if err != nil {
				t.Fatalf("server ping as the system user: %v", err)
			}
			var ping struct {
				Server struct {
					Name string `json:"name"`
				} `json:"server"`
			}
			if err := json.Unmarshal(m.Data, &ping); err != nil || ping.Server.Name != "sys-test" {
				t.Fatalf("server ping = %s, %v", m.Data, err)
			}
			var opts []nats.Option
			if tc.user != "" {
				opts = append(opts, nats.UserInfo(tc.user, tc.pass))
				if _, err := nats.Connect(s.ClientURL()); err == nil {
					t.Fatal("a client without credentials got in while nats_server.user is set")
				}
			}
			app, err := nats.Connect(s.ClientURL(), opts...)
			if err != nil {
				t.Fatalf("tether client: %v", err)
			}
			defer app.Close()
			sub, err := app.SubscribeSync("tether.x")
			if err != nil {
				t.Fatal(err)
			}
			if err := app.Publish("tether.x", []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, err := sub.NextMsg(5 * time.Second); err != nil {
				t.Fatalf("pub/sub in the clients' account: %v", err)
			}
			if _, err := app.Request("$SYS.REQ.SERVER.PING", nil, 300*time.Millisecond); err == nil {
				t.Fatal("a tether client reached the system account's subjects")
			}
			if _, err := nats.Connect(s.ClientURL(), nats.UserInfo("sys", "wrong")); err == nil {
				t.Fatal("the system user got in with a wrong password")
			}
		})
	}
	if _, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", SystemAccount: natsserver.SystemAccount{User: "sys"}}, nil); err == nil {
		t.Fatal("a system user without a password was accepted")
	}
}
