package membership_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/store"
)

// The node is the authority on its URL: a seed or an operator that writes
// another one while it runs is corrected within a few heartbeats.
func TestNodePutsItsURLBack(t *testing.T) {
	e := testenv.New(t)
	st := store.NewMemory()
	cfg := testenv.FastConfig("n1")
	cfg.HeartbeatInterval = 20 * time.Millisecond
	n, _ := e.StartMember(cfg, st)
	ctx := context.Background()
	rec, err := st.Node(ctx, "n1")
	if err != nil || rec.URL != n.URL() || rec.State != store.StateActive {
		t.Fatalf("registered %+v, %v", rec, err)
	}
	rec.URL = "ws://placeholder.example:1/ws"
	if err := st.PutNode(ctx, rec); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if rec, _ := st.Node(ctx, "n1"); rec.URL != n.URL() {
			return fmt.Errorf("registry URL %q", rec.URL)
		}
		return nil
	})
	// Draining on shutdown, then gone from the live set.
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	rec, _ = st.Node(ctx, "n1")
	if rec.State != store.StateDraining || rec.Live(time.Now(), time.Hour) {
		t.Fatalf("after shutdown: %+v", rec)
	}
	// A standby node that stops stays standby (draining is for active ones).
	if err := st.SetNodeState(ctx, "n1", store.StateStandby); err != nil {
		t.Fatal(err)
	}
	n3, _ := e.StartMember(cfg, st)
	if err := n3.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, _ = st.Node(ctx, "n1"); rec.State != store.StateStandby {
		t.Fatalf("standby node after a graceful stop: %+v", rec)
	}
	// Started again, it is active again; a state an operator set survives.
	for _, tc := range []struct{ before, after store.NodeState }{
		{store.StateDraining, store.StateActive},
		{store.StateStandby, store.StateStandby},
	} {
		if err := st.SetNodeState(ctx, "n1", tc.before); err != nil {
			t.Fatal(err)
		}
		n2, _ := e.StartMember(cfg, st)
		rec, _ = st.Node(ctx, "n1")
		_ = n2.Shutdown(ctx)
		if rec.State != tc.after || !rec.Live(time.Now(), time.Minute) {
			t.Fatalf("restarted from %s: %+v", tc.before, rec)
		}
	}
}
