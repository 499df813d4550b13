package directory_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testutil"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/store"
)

// The directory reaps the connections of dead nodes, even with no node
// left alive, and announces each as disconnected with reason node_lost.
func TestReapDeadNodes(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		ns := natstest.RunServer(t)
		nc := natstest.Connect(t, ns)
		subj := bus.MustSubjects("")
		ch := make(chan *nats.Msg, 64)
		sub, err := nc.ChanSubscribe(subj.AllEvents(), ch)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}

		ctx := t.Context()
		now := time.Now()
		since := now.Add(-time.Minute).UTC().Truncate(time.Millisecond)
		// dead: stale heartbeat; left: cleared by Leave; alive: fresh;
		// gone: removed from the map with connections still registered.
		for id, beat := range map[string]time.Time{"dead": now.Add(-time.Hour), "left": now, "alive": now.Add(time.Hour), "gone": now} {
			if err := st.PutNode(ctx, store.Node{ID: id, URL: nodeURL(id), State: store.StateActive}); err != nil {
				t.Fatal(err)
			}
			if err := st.Heartbeat(ctx, id, store.Load{}, beat); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.Leave(ctx, "left"); err != nil {
			t.Fatal(err)
		}
		conns := []store.Conn{
			{ID: "dead.a1", Service: "vacuum", Device: "dev-1", Tier: "paid", Since: since},
			{ID: "dead.a2", Service: "aircon", Device: "dev-2", Since: since},
			{ID: "left.b1", Service: "vacuum", Device: "dev-3", Since: since},
			{ID: "alive.c1", Service: "vacuum", Device: "dev-4", Since: since},
			{ID: "gone.d1", Service: "tv", Device: "dev-5", Since: since},
		}
		if err := st.AddConns(ctx, conns); err != nil {
			t.Fatal(err)
		}
		if err := st.RemoveNode(ctx, "gone"); err != nil {
			t.Fatal(err)
		}

		startDir(t, st, nc, func(c *directory.Config) {
			c.HeartbeatInterval = 50 * time.Millisecond // dead after 1.1s; reap every 50ms
			c.RefreshInterval = 50 * time.Millisecond
		})
		want := map[string]store.Conn{}
		for _, c := range conns {
			if c.ID != "alive.c1" {
				want[c.ID] = c
			}
		}
		got := map[string]bool{}
		timeout := time.After(10 * time.Second)
		for len(got) < len(want) {
			select {
			case m := <-ch:
				var ev bus.Event
				if err := json.Unmarshal(m.Data, &ev); err != nil {
					t.Fatal(err)
				}
				c, ok := want[ev.Conn]
				if !ok || got[ev.Conn] {
					t.Fatalf("unexpected or repeated event %s", m.Data)
				}
				got[ev.Conn] = true
				if ev.Type != bus.EventDisconnected || ev.Reason != bus.ReasonNodeLost || ev.Service != c.Service ||
					ev.Device != c.Device || ev.Tier != c.Tier || ev.Node != protocol.ConnNode(c.ID) || !ev.Since.Equal(c.Since) {
					t.Errorf("event %s for %+v", m.Data, c)
				}
				if m.Subject != subj.Events(c.Service) {
					t.Errorf("event on %s, want %s", m.Subject, subj.Events(c.Service))
				}
				for k, v := range map[string]string{
					bus.HeaderEvent: bus.EventDisconnected, bus.HeaderService: c.Service, bus.HeaderDevice: c.Device,
					bus.HeaderConn: c.ID, bus.HeaderNode: protocol.ConnNode(c.ID),
				} {
					if m.Header.Get(k) != v {
						t.Errorf("header %s = %q, want %q", k, m.Header.Get(k), v)
					}
				}
			case <-timeout:
				t.Fatalf("reaped events: got %v, want %d", got, len(want))
			}
		}
		testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			for _, n := range []string{"dead", "left", "gone"} {
				if cs, err := st.ConnsOfNode(ctx, n); err != nil || len(cs) != 0 {
					return fmt.Errorf("%s still has %v (%v)", n, cs, err)
				}
			}
			return nil
		})
		if cs, err := st.ConnsOfNode(ctx, "alive"); err != nil || len(cs) != 1 {
			t.Errorf("live node's conns: %v %v", cs, err)
		}
		select {
		case m := <-ch:
			t.Errorf("extra event %s", m.Data)
		default:
		}
	})
}
