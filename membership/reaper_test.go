package membership_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/membership"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/store/redistest"
)

func seedNodes(t *testing.T, st store.Store, at time.Time) {
	t.Helper()
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if err := st.PutNode(ctx, store.Node{ID: id, URL: "ws://127.0.0.1:1/ws", State: store.StateActive}); err != nil {
			t.Fatal(err)
		}
		if err := st.Heartbeat(ctx, id, store.Load{}, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AddConns(ctx, []store.Conn{
		{ID: "a.1", Node: "a", Service: "vacuum", Device: "d1", Since: at},
		{ID: "a.2", Node: "a", Service: "vacuum", Device: "d2", Since: at},
		{ID: "b.1", Node: "b", Service: "vacuum", Device: "d3", Since: at},
	}); err != nil {
		t.Fatal(err)
	}
}

func TestReaperReapsDeadNodesOnce(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory()
	t0 := time.Now()
	seedNodes(t, st, t0)
	r := &membership.Reaper{Store: st, TTL: time.Second, Self: "b"}
	// At first the Reaper waits a TTL: nodes may not have heartbeated yet.
	if lost, err := r.Reap(ctx, t0.Add(5*time.Second)); err != nil || len(lost) != 0 {
		t.Fatalf("first Reap = %v, %v; want nothing", lost, err)
	}
	// b keeps heartbeating; a stopped at t0.
	if err := st.Heartbeat(ctx, "b", store.Load{}, t0.Add(6*time.Second)); err != nil {
		t.Fatal(err)
	}
	lost, err := r.Reap(ctx, t0.Add(6500*time.Millisecond))
	if err != nil || len(lost) != 1 || len(lost["a"]) != 2 {
		t.Fatalf("Reap = %v, %v; want a's two connections", lost, err)
	}
	if lost, _ := r.Reap(ctx, t0.Add(7*time.Second)); len(lost) != 0 {
		t.Fatalf("second Reap = %v; want nothing", lost)
	}
	if cs, _ := st.ConnsOfNode(ctx, "b"); len(cs) != 1 {
		t.Fatalf("b's connections = %v", cs)
	}
}

// Heartbeats cannot be written while the store is down; a Reaper must not
// take every node for dead the moment it comes back.
func TestReaperWaitsAfterStoreOutage(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t)
	st, err := store.OpenRedis(ctx, store.RedisConfig{URL: srv.URL(), Prefix: redistest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now()
	seedNodes(t, st, t0)
	r := &membership.Reaper{Store: st, TTL: time.Second}
	if _, err := r.Reap(ctx, t0); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	if _, err := r.Reap(ctx, t0.Add(3*time.Second)); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Reap with Redis down: %v", err)
	}
	srv.Restart()
	// Back after 5s: every heartbeat is stale, yet nothing is reaped...
	back := t0.Add(5 * time.Second)
	var lost map[string][]store.Conn
	// go-redis may hold off redialling for a moment after failures.
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		lost, err = r.Reap(ctx, back)
		return err
	})
	if len(lost) != 0 {
		t.Fatalf("Reap right after the outage = %v, %v; want nothing", lost, err)
	}
	// The test's redis-server keeps nothing on disk: put back what a
	// persistent one would still hold, heartbeats of before the outage.
	seedNodes(t, st, t0)
	if lost, err := r.Reap(ctx, back.Add(100*time.Millisecond)); err != nil || len(lost) != 0 {
		t.Fatalf("Reap within a TTL of the outage = %v, %v; want nothing", lost, err)
	}
	// ...and the nodes that heartbeat again within a TTL survive.
	if err := st.Heartbeat(ctx, "a", store.Load{}, back.Add(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	lost, err = r.Reap(ctx, back.Add(1200*time.Millisecond))
	if err != nil || len(lost) != 1 || len(lost["b"]) != 1 {
		t.Fatalf("Reap a TTL after the outage = %v, %v; want only b (silent since)", lost, err)
	}
}

// A Reaper whose owner could not reach the store waits a TTL again.
func TestReaperStoreFailed(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory()
	t0 := time.Now()
	seedNodes(t, st, t0)
	r := &membership.Reaper{Store: st, TTL: time.Second, Self: "b"}
	if lost, _ := r.Reap(ctx, t0); len(lost) != 0 {
		t.Fatalf("first Reap = %v", lost)
	}
	r.StoreFailed()
	if lost, _ := r.Reap(ctx, t0.Add(5*time.Second)); len(lost) != 0 {
		t.Fatalf("Reap right after a store failure = %v; want nothing", lost)
	}
	if lost, _ := r.Reap(ctx, t0.Add(6100*time.Millisecond)); len(lost["a"]) != 2 {
		t.Fatalf("Reap a TTL later = %v; want a's connections", lost)
	}
}

// A read that hangs on a frozen store and then answers counts as an
// outage: the heartbeats of that time could not be written.
func TestReaperHungRead(t *testing.T) {
	ctx := context.Background()
	srv := redistest.StartServer(t)
	st, err := store.OpenRedis(ctx, store.RedisConfig{URL: srv.URL(), Prefix: redistest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now()
	seedNodes(t, st, t0)
	r := &membership.Reaper{Store: st, TTL: time.Second}
	if _, err := r.Reap(ctx, t0); err != nil {
		t.Fatal(err)
	}
	srv.Freeze()
	thawed := make(chan struct{})
	go func() {
		defer close(thawed)
		time.Sleep(600 * time.Millisecond) // the length of the freeze
		srv.Thaw()
	}()
	// Judged 5s on, every heartbeat is stale: the read hangs through the
	// freeze, so nothing is reaped...
	lost, err := r.Reap(ctx, t0.Add(5*time.Second))
	<-thawed
	if err != nil || len(lost) != 0 {
		t.Fatalf("Reap through a freeze = %v, %v; want nothing", lost, err)
	}
	if lost, err := r.Reap(ctx, t0.Add(5500*time.Millisecond)); err != nil || len(lost) != 0 {
		t.Fatalf("Reap within a TTL of the freeze = %v, %v; want nothing", lost, err)
	}
	// ...until the store has been back a whole TTL.
	if lost, err := r.Reap(ctx, t0.Add(7*time.Second)); err != nil || len(lost) != 2 {
		t.Fatalf("Reap a TTL after the freeze = %v, %v; want a's and b's", lost, err)
	}
}
