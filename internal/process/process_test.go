package process_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherhq/tether/bus/natsserver/natstest"
	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/process"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/node"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/token"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(t *testing.T, st store.Store) process.Env {
	t.Helper()
	cfg, err := config.Dev()
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.RunServer(t)
	return process.Env{Config: cfg, Log: slog.New(slog.DiscardHandler), Store: st, NATSURLs: []string{ns.ClientURL()}}
}

// A node process registers its node, answers control requests and leaves
// the registry when it stops; a directory process lists it.
func TestNodeAndDirectoryProcesses(t *testing.T) {
	st := store.NewMemory()
	e := env(t, st)
	ncfg := e.Config.Node
	ncfg.ID, ncfg.Listen = "n1", "127.0.0.1:0"
	np, err := process.NewNode(e, ncfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := np.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n := np.Node()
	rec, err := st.Node(ctx, "n1")
	if err != nil || rec.URL != n.URL() || !rec.Live(time.Now(), time.Minute) || np.Member() == nil {
		t.Fatalf("registered %+v, %v", rec, err)
	}
	if err := st.PutService(ctx, "vacuum", "free", []string{"free"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Assign(ctx, "vacuum", "free", "n1"); err != nil {
		t.Fatal(err)
	}
	dcfg := process.DirectoryConfig(e)
	dcfg.Listen = "127.0.0.1:0"
	dp, err := process.NewDirectory(e, dcfg, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(dp.Server().URL() + "/v1/nodes?service=vacuum")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("lookup: %d", resp.StatusCode)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := dp.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := np.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if err := np.Shutdown(sctx); err != nil {
		t.Fatal("second Shutdown:", err)
	}
	if rec, _ := st.Node(ctx, "n1"); rec.Live(time.Now(), time.Minute) {
		t.Fatalf("still live after Shutdown: %+v", rec)
	}
}

// Processes check what they can before connecting anything.
func TestProcessErrors(t *testing.T) {
	e := env(t, nil)
	if _, err := process.NewDirectory(e, process.DirectoryConfig(e), false); !errors.Is(err, process.ErrNoStore) {
		t.Errorf("directory without a store: %v", err)
	}
	bad := e.Config.Node
	bad.ID = "no spaces allowed"
	if _, err := process.NewNode(e, bad); err == nil {
		t.Error("node with a bad ID accepted")
	}
	// A node without a store runs unregistered.
	ncfg := e.Config.Node
	ncfg.ID, ncfg.Listen = "solo", "127.0.0.1:0"
	np, err := process.NewNode(e, ncfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- process.Run(ctx, np, 10*time.Second) }()
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if np.Node() == nil {
			return errors.New("not started")
		}
		return nil
	})
	if np.Member() != nil {
		t.Error("a node without a store has a membership")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// A failed Start leaves nothing behind (goleak checks).
	e.NATSURLs = []string{"nats://127.0.0.1:1"}
	e.Config.NATS.ConnectTimeout = 200 * time.Millisecond
	np, err = process.NewNode(e, ncfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := np.Start(context.Background()); err == nil {
		t.Fatal("Start without NATS succeeded")
	}
}

// A node that registers in a shared store, and so may have peers whose
// takeovers it obeys, needs node.cluster_secret unless told otherwise; a
// revocation in the store is in force before it accepts a device.
func TestNodeNeedsClusterSecret(t *testing.T) {
	st := store.NewMemory()
	e := env(t, st)
	ncfg := e.Config.Node
	ncfg.ID, ncfg.Listen, ncfg.ClusterSecret = "n1", "127.0.0.1:0", ""
	np, err := process.NewNode(e, ncfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := np.Start(ctx); !errors.Is(err, process.ErrNoClusterSecret) {
		t.Fatalf("Start without a cluster secret: %v", err)
	}
	for name, mod := range map[string]func(*node.Config){
		"allow_unsigned_takeovers": func(c *node.Config) { c.AllowUnsignedTakeovers = true },
		"multiple_connections":     func(c *node.Config) { c.MultipleConnections = true },
	} {
		c := ncfg
		mod(&c)
		np, err := process.NewNode(e, c)
		if err != nil {
			t.Fatal(err)
		}
		if err := np.Start(ctx); err != nil {
			t.Fatalf("Start with %s: %v", name, err)
		}
		_ = np.Shutdown(ctx)
	}
	// Revocations recorded before the node started are in force at once.
	if err := st.Revoke(ctx, store.Revocation{Service: "vacuum", TokenID: "t-1", Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ncfg.ClusterSecret = "process-test-cluster-secret"
	np, err = process.NewNode(e, ncfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := np.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer np.Shutdown(ctx)
	keys, _ := e.Config.Keyring()
	tok, _ := keys.Issue("vacuum", "d1", token.IssueOptions{ID: "t-1"})
	d, err := simulator.NewDevice(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{np.Node().URL()}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.Run(rctx); !errors.Is(err, simulator.ErrRefused) {
		t.Fatalf("a revoked token: %v, want refused", err)
	}
}
