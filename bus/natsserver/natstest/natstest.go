// Package natstest starts real embedded NATS servers for tests, on free
// ports, and shuts them down when the test ends.
package natstest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver"
	"github.com/tetherhq/tether/internal/testutil"
)

// RunServer starts an embedded NATS server on a free loopback port with
// monitoring on, and shuts it down when the test ends.
func RunServer(t testing.TB) *natsserver.Server {
	t.Helper()
	s, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatalf("natstest: start NATS: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// RunCluster starts n embedded NATS servers routed into one cluster, and
// waits until every server has a route to every other.
func RunCluster(t testing.TB, n int) []*natsserver.Server {
	t.Helper()
	var servers []*natsserver.Server
	for i := range n {
		c := natsserver.Config{
			Listen: "127.0.0.1:0", ClusterListen: "127.0.0.1:0", ClusterName: "test",
			ServerName: fmt.Sprintf("s%d", i),
		}
		if i > 0 {
			c.Routes = []string{servers[0].RouteURL()}
		}
		s, err := natsserver.Start(c, nil)
		if err != nil {
			t.Fatalf("natstest: start NATS s%d: %v", i, err)
		}
		t.Cleanup(s.Shutdown)
		servers = append(servers, s)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i, s := range servers {
			if s.NumRoutes() < n-1 {
				return fmt.Errorf("natstest: cluster of %d did not form (server s%d has %d routes)", n, i, s.NumRoutes())
			}
		}
		return nil
	})
	return servers
}

// Connect opens a client connection to s that is closed when the test ends.
func Connect(t testing.TB, s *natsserver.Server) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(context.Background(), bus.Config{URLs: []string{s.ClientURL()}}, t.Name(), nil)
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
