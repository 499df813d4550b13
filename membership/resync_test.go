package membership_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/store/redistest"
)

// After Redis restarts empty the node puts its record back (in the state
// it had) and rewrites its connections without announcing them again:
// nobody announced them lost. When a peer did reap them (announced
// node_lost) while the node could not write, the resync announces them
// again, marked "resync".
func TestResyncAnnouncesOnlyWhatWasReaped(t *testing.T) {
	rs := redistest.StartServer(t)
	prefix := redistest.Prefix(t)
	st, err := store.OpenRedis(t.Context(), store.RedisConfig{URL: rs.URL(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.HeartbeatInterval = 50 * time.Millisecond
	n, m := e.StartMember(cfg, st)
	ctx := context.Background()
	if err := st.SetNodeState(ctx, "n1", store.StateStandby); err != nil {
		t.Fatal(err)
	}
	const devices = 3
	for i := range devices {
		e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n.URL()}}, fmt.Sprintf("vac-%d", i))
	}
	registered := func() error {
		cs, err := st.ConnsOfNode(ctx, "n1")
		if err != nil || len(cs) != devices {
			return fmt.Errorf("registry holds %d connections (%v)", len(cs), err)
		}
		return nil
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, registered)
	// The node reads its state back within a few heartbeats.
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := m.State(); got != store.StateStandby {
			return fmt.Errorf("member state %q", got)
		}
		return nil
	})

	var mu sync.Mutex
	var connected []bus.Event
	sub, err := e.NC.Subscribe(e.Subj.Events("vacuum"), func(m *nats.Msg) {
		var ev bus.Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.Type == bus.EventConnected {
			mu.Lock()
			connected = append(connected, ev)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := e.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	// Redis restarts empty: the record and the registry come back, and
	// the standby state with them.
	rs.Restart()
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if rec, err := st.Node(ctx, "n1"); err != nil || rec.State != store.StateStandby {
			return fmt.Errorf("node record %+v, %v", rec, err)
		}
		return registered()
	})

	// A peer reaps the node's connections while it cannot write (here: its
	// record is gone, so its heartbeat fails): the resync announces them
	// again.
	if _, err := st.ReapConns(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(connected) < devices {
			return fmt.Errorf("%d connected events", len(connected))
		}
		return nil
	})
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, registered)
	mu.Lock()
	defer mu.Unlock()
	// Events from one publisher arrive in order: any announcement made
	// after the empty restart would be here, before these.
	if len(connected) != devices {
		t.Fatalf("%d connected events, want %d: %+v", len(connected), devices, connected)
	}
	for _, ev := range connected {
		if ev.Reason != bus.ReasonResync || ev.Node != "n1" {
			t.Errorf("connected event %+v, want reason %q", ev, bus.ReasonResync)
		}
	}
}
