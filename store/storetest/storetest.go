// Package storetest is the conformance suite of store.Store: every
// implementation runs it from its own tests,
//
//	func TestMemory(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return store.NewMemory() })
//	}
//
// newStore must return an empty store that no other test uses, and release it
// when t ends. The subtests run in parallel.
//
// Beyond the Store interface's comments, the suite pins these behaviours:
//   - the map version moves only when something changed: putting the same
//     node, service or assignment again, a repeated Assign, an Unassign of
//     nothing, heartbeats, Leave, clients and connections leave it alone;
//   - Node, Heartbeat, Leave, SetNodeState and RemoveNode of an unknown node,
//     DeleteService of an unknown service, DeleteClient and Client of an
//     unknown client fail with ErrNotFound; Assign and SetAssignment need the
//     service and every node to exist; Unassign of anything missing is a no-op;
//   - PutService with an empty default tier uses store.DefaultTier, and
//     creates the default tier and the named tiers empty; tiers emptied by
//     Unassign or SetAssignment stay, empty;
//   - SetAssignment with ifVersion 0 is unconditional; a node listed twice or
//     a negative version is ErrInvalid; an unchanged tier returns the current
//     version;
//   - Leave clears both the heartbeat and the load;
//   - Clients needs limit > 0 and pages in byte order of IDs; `after` need
//     not be a stored ID;
//   - AddConns fills an empty Conn.Node from the ID and rejects one that
//     does not match it; a bad record fails the whole batch; re-adding an ID
//     replaces it; ConnsOfNode and ReapConns return connections in ID order;
//     ConnCounts leaves out nodes without connections;
//   - Revoke of a device keeps the later NotBefore and the later Until of
//     two, of a token ID the later Until; Revocations returns them ordered
//     by service, device revocations by device before token revocations by
//     ID, in UTC, and forgets those whose Until is before now for good;
//   - every method checks its arguments (ErrInvalid) and a cancelled context
//     (the context's error) before doing anything.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tetherhq/tether/store"
)

// Run runs the conformance suite against the stores newStore makes.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"NodePutGet", testNodePutGet},
		{"NodeUnknown", testNodeUnknown},
		{"Heartbeat", testHeartbeat},
		{"Leave", testLeave},
		{"NodeState", testNodeState},
		{"RemoveNode", testRemoveNode},
		{"Services", testServices},
		{"DeleteService", testDeleteService},
		{"AssignUnassign", testAssignUnassign},
		{"SetAssignment", testSetAssignment},
		{"SetAssignmentRace", testSetAssignmentRace},
		{"ConcurrentAssign", testConcurrentAssign},
		{"MapVersion", testMapVersion},
		{"MapSnapshot", testMapSnapshot},
		{"Clients", testClients},
		{"ClientsPaging", testClientsPaging},
		{"Conns", testConns},
		{"ReapConns", testReapConns},
		{"ReapConnsConcurrent", testReapConnsConcurrent},
		{"ReapConnsWhileAdding", testReapConnsWhileAdding},
		{"Copies", testCopies},
		{"Invalid", testInvalid},
		{"Canceled", testCanceled},
		{"Ping", testPing},
		{"Lease", testLease},
		{"LeaseRace", testLeaseRace},
		{"ApplyChanges", testApplyChanges},
		{"Records", testRecords},
		{"Epoch", testEpoch},
		{"Revocations", testRevocations},
		{"RevocationsInvalid", testRevocationsInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

var t0 = time.Unix(1_700_000_000, 0).UTC()

func nodeURL(id string) string { return "ws://" + id + ".example:18080/ws" }

func putNode(t *testing.T, s store.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := s.PutNode(t.Context(), store.Node{ID: id, URL: nodeURL(id), State: store.StateActive}); err != nil {
			t.Fatalf("PutNode(%s): %v", id, err)
		}
	}
}

func putService(t *testing.T, s store.Store, name, defaultTier string, tiers ...string) {
	t.Helper()
	if err := s.PutService(t.Context(), name, defaultTier, tiers); err != nil {
		t.Fatalf("PutService(%s): %v", name, err)
	}
}

func assign(t *testing.T, s store.Store, service, tier string, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		if err := s.Assign(t.Context(), service, tier, n); err != nil {
			t.Fatalf("Assign(%s, %s, %s): %v", service, tier, n, err)
		}
	}
}

func version(t *testing.T, s store.Store) int64 {
	t.Helper()
	v, err := s.Version(t.Context())
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	return v
}

func getMap(t *testing.T, s store.Store) store.Map {
	t.Helper()
	m, err := s.Map(t.Context())
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	return m
}

func getNode(t *testing.T, s store.Store, id string) store.Node {
	t.Helper()
	n, err := s.Node(t.Context(), id)
	if err != nil {
		t.Fatalf("Node(%s): %v", id, err)
	}
	return n
}

// tier returns a service's tier from a fresh Map.
func tier(t *testing.T, s store.Store, service, tier string) []string {
	t.Helper()
	svc, ok := getMap(t, s).Services[service]
	if !ok {
		t.Fatalf("service %s not in the map", service)
	}
	return svc.Tiers[tier]
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

func wantVersion(t *testing.T, s store.Store, what string, want int64) {
	t.Helper()
	if v := version(t, s); v != want {
		t.Fatalf("%s: version %d, want %d", what, v, want)
	}
}

func wantTier(t *testing.T, s store.Store, service, name string, want ...string) {
	t.Helper()
	if got := tier(t, s, service, name); !slices.Equal(got, want) {
		t.Fatalf("%s/%s = %q, want %q", service, name, got, want)
	}
}

// sameNode compares nodes, times by Equal (a store may change their location).
func sameNode(a, b store.Node) bool {
	if !a.Heartbeat.Equal(b.Heartbeat) {
		return false
	}
	a.Heartbeat, b.Heartbeat = time.Time{}, time.Time{}
	return a == b
}

func sameConns(a, b []store.Conn) bool {
	return slices.EqualFunc(a, b, func(x, y store.Conn) bool {
		if !x.Since.Equal(y.Since) {
			return false
		}
		x.Since, y.Since = time.Time{}, time.Time{}
		return x == y
	})
}

func conn(node string, i int) store.Conn {
	return store.Conn{
		ID: fmt.Sprintf("%s.c%04d", node, i), Node: node, Service: "vacuum",
		Device: fmt.Sprintf("dev-%d", i), Tier: "free", Since: t0.Add(time.Duration(i) * time.Second),
	}
}

func conns(node string, from, n int) []store.Conn {
	out := make([]store.Conn, n)
	for i := range out {
		out[i] = conn(node, from+i)
	}
	return out
}

func addConns(t *testing.T, s store.Store, cs []store.Conn) {
	t.Helper()
	if err := s.AddConns(t.Context(), cs); err != nil {
		t.Fatalf("AddConns: %v", err)
	}
}

func testNodePutGet(t *testing.T, s store.Store) {
	ctx := t.Context()
	v0 := version(t, s)
	n := store.Node{ID: "n1", URL: nodeURL("n1"), State: store.StateStandby, Class: "high-spec", Capacity: 5000}
	if err := s.PutNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if got := getNode(t, s, "n1"); !sameNode(got, n) {
		t.Fatalf("Node = %+v, want %+v", got, n)
	}
	wantVersion(t, s, "after creating a node", v0+1)

	if err := s.PutNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	wantVersion(t, s, "after putting the same record", v0+1)

	load := store.Load{Connections: 42, CPU: 0.5}
	if err := s.Heartbeat(ctx, "n1", load, t0); err != nil {
		t.Fatal(err)
	}
	n.URL, n.Capacity, n.Class = "wss://n1.example/ws", 0, ""
	// Load and heartbeat given to PutNode are ignored: it keeps the stored ones.
	n.Load, n.Heartbeat = store.Load{Connections: 1}, t0.Add(time.Hour)
	if err := s.PutNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	wantVersion(t, s, "after changing the record", v0+2)
	want := n
	want.Load, want.Heartbeat = load, t0
	if got := getNode(t, s, "n1"); !sameNode(got, want) {
		t.Fatalf("after update Node = %+v, want %+v", got, want)
	}
}

func testNodeUnknown(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.Node(ctx, "nx")
	wantErr(t, "Node", err, store.ErrNotFound)
	wantErr(t, "Heartbeat", s.Heartbeat(ctx, "nx", store.Load{}, t0), store.ErrNotFound)
	wantErr(t, "Leave", s.Leave(ctx, "nx"), store.ErrNotFound)
	wantErr(t, "SetNodeState", s.SetNodeState(ctx, "nx", store.StateSleep), store.ErrNotFound)
	wantErr(t, "RemoveNode", s.RemoveNode(ctx, "nx"), store.ErrNotFound)
	if m := getMap(t, s); len(m.Nodes) != 0 {
		t.Fatalf("failed calls created nodes: %v", m.Nodes)
	}
}

func testHeartbeat(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1")
	v := version(t, s)
	if n := getNode(t, s, "n1"); !n.Heartbeat.IsZero() || n.Live(t0, time.Minute) {
		t.Fatalf("a declared node has heartbeat %v", n.Heartbeat)
	}
	for i := range 3 {
		load := store.Load{Connections: 10 * i, CPU: float64(i) / 4}
		at := t0.Add(time.Duration(i) * 5 * time.Second)
		if err := s.Heartbeat(ctx, "n1", load, at); err != nil {
			t.Fatal(err)
		}
		n := getNode(t, s, "n1")
		if n.Load != load || !n.Heartbeat.Equal(at) {
			t.Fatalf("heartbeat %d: load %+v at %v, want %+v at %v", i, n.Load, n.Heartbeat, load, at)
		}
		if !n.Live(at.Add(time.Second), 15*time.Second) || n.Live(at.Add(15*time.Second), 15*time.Second) {
			t.Fatalf("heartbeat %d: Live is wrong", i)
		}
		if mn := getMap(t, s).Nodes["n1"]; !sameNode(mn, n) {
			t.Fatalf("Map has %+v, Node has %+v", mn, n)
		}
	}
	wantVersion(t, s, "after heartbeats", v)
}

func testLeave(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1")
	putService(t, s, "vacuum", "")
	assign(t, s, "vacuum", "free", "n1")
	if err := s.Heartbeat(ctx, "n1", store.Load{Connections: 3, CPU: 0.1}, t0); err != nil {
		t.Fatal(err)
	}
	v := version(t, s)
	if err := s.Leave(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	n := getNode(t, s, "n1")
	if !n.Heartbeat.IsZero() || n.Load != (store.Load{}) || n.Live(t0, time.Hour) {
		t.Fatalf("after Leave: heartbeat %v load %+v, want both cleared", n.Heartbeat, n.Load)
	}
	if n.URL != nodeURL("n1") || n.State != store.StateActive {
		t.Fatalf("Leave changed the record: %+v", n)
	}
	wantTier(t, s, "vacuum", "free", "n1")
	wantVersion(t, s, "after Leave", v)
	if err := s.Leave(ctx, "n1"); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
}

func testNodeState(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1")
	v := version(t, s)
	for i, st := range []store.NodeState{store.StateDraining, store.StateSleep, store.StateStandby, store.StateActive} {
		if err := s.SetNodeState(ctx, "n1", st); err != nil {
			t.Fatal(err)
		}
		if got := getNode(t, s, "n1").State; got != st {
			t.Fatalf("state %s, want %s", got, st)
		}
		wantVersion(t, s, "after SetNodeState "+string(st), v+int64(i)+1)
	}
	if err := s.SetNodeState(ctx, "n1", store.StateActive); err != nil {
		t.Fatal(err)
	}
	wantVersion(t, s, "after setting the same state", v+4)
	wantErr(t, "SetNodeState(bogus)", s.SetNodeState(ctx, "n1", "bogus"), store.ErrInvalid)
	wantErr(t, "SetNodeState(empty)", s.SetNodeState(ctx, "n1", ""), store.ErrInvalid)
}

func testRemoveNode(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1", "n2", "n3")
	putService(t, s, "vacuum", "free", "paid")
	putService(t, s, "tv", "free")
	assign(t, s, "vacuum", "free", "n1", "n2", "n3")
	assign(t, s, "vacuum", "paid", "n2")
	assign(t, s, "tv", "free", "n2", "n1")
	if err := s.Heartbeat(ctx, "n2", store.Load{Connections: 1}, t0); err != nil {
		t.Fatal(err)
	}
	addConns(t, s, conns("n2", 0, 3))
	v := version(t, s)

	if err := s.RemoveNode(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Node(ctx, "n2")
	wantErr(t, "Node after RemoveNode", err, store.ErrNotFound)
	wantTier(t, s, "vacuum", "free", "n1", "n3")
	wantTier(t, s, "vacuum", "paid")
	wantTier(t, s, "tv", "free", "n1")
	m := getMap(t, s)
	if _, ok := m.Nodes["n2"]; ok || len(m.Nodes) != 2 {
		t.Fatalf("map nodes after RemoveNode: %v", m.Nodes)
	}
	if m.Version <= v {
		t.Fatalf("RemoveNode did not bump the version (%d -> %d)", v, m.Version)
	}
	// Its connections stay for ReapConns.
	cs, err := s.ConnsOfNode(ctx, "n2")
	if err != nil || len(cs) != 3 {
		t.Fatalf("ConnsOfNode of a removed node = %d conns, %v; want 3", len(cs), err)
	}
	reaped, err := s.ReapConns(ctx, "n2")
	if err != nil || !sameConns(reaped, conns("n2", 0, 3)) {
		t.Fatalf("ReapConns of a removed node = %v, %v", reaped, err)
	}
	// A new node with the old ID starts afresh.
	putNode(t, s, "n2")
	if n := getNode(t, s, "n2"); !n.Heartbeat.IsZero() || n.Load != (store.Load{}) {
		t.Fatalf("re-created node kept the old heartbeat: %+v", n)
	}
	wantTier(t, s, "tv", "free", "n1")
}

func testServices(t *testing.T, s store.Store) {
	v := version(t, s)
	putService(t, s, "vacuum", "")
	svc := getMap(t, s).Services["vacuum"]
	if svc.Name != "vacuum" || svc.DefaultTier != store.DefaultTier {
		t.Fatalf("service = %+v, want default tier %q", svc, store.DefaultTier)
	}
	if nodes, ok := svc.Tiers[store.DefaultTier]; !ok || len(nodes) != 0 || len(svc.Tiers) != 1 {
		t.Fatalf("tiers = %v, want one empty default tier", svc.Tiers)
	}
	wantVersion(t, s, "after PutService", v+1)

	putService(t, s, "ac", "paid", "free", "paid")
	putNode(t, s, "n1", "n2")
	assign(t, s, "ac", "paid", "n1")
	assign(t, s, "ac", "free", "n2")
	v = version(t, s)

	putService(t, s, "ac", "paid", "free")
	wantVersion(t, s, "after putting the same service", v)

	putService(t, s, "ac", "free", "gold")
	wantVersion(t, s, "after changing the service", v+1)
	svc = getMap(t, s).Services["ac"]
	if svc.DefaultTier != "free" || len(svc.Tiers) != 3 {
		t.Fatalf("service = %+v, want default free and tiers free, paid, gold", svc)
	}
	wantTier(t, s, "ac", "paid", "n1")
	wantTier(t, s, "ac", "free", "n2")
	wantTier(t, s, "ac", "gold")

	// A new default tier is created.
	putService(t, s, "ac", "vip")
	if _, ok := getMap(t, s).Services["ac"].Tiers["vip"]; !ok {
		t.Fatal("new default tier not created")
	}
	if n := len(getMap(t, s).Services); n != 2 {
		t.Fatalf("%d services, want 2", n)
	}
}

func testDeleteService(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1")
	putService(t, s, "vacuum", "")
	putService(t, s, "tv", "")
	assign(t, s, "vacuum", "free", "n1")
	v := version(t, s)
	if err := s.DeleteService(ctx, "vacuum"); err != nil {
		t.Fatal(err)
	}
	wantVersion(t, s, "after DeleteService", v+1)
	m := getMap(t, s)
	if _, ok := m.Services["vacuum"]; ok || len(m.Services) != 1 {
		t.Fatalf("services after delete: %v", m.Services)
	}
	wantErr(t, "second DeleteService", s.DeleteService(ctx, "vacuum"), store.ErrNotFound)
	wantVersion(t, s, "after a failed DeleteService", v+1)
	// Re-created, it starts without the old assignments.
	putService(t, s, "vacuum", "")
	wantTier(t, s, "vacuum", "free")
	if _, err := s.Node(ctx, "n1"); err != nil {
		t.Fatalf("DeleteService touched the node: %v", err)
	}
}

func testAssignUnassign(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1", "n2", "n3")
	putService(t, s, "vacuum", "")
	wantErr(t, "Assign to an unknown service", s.Assign(ctx, "nope", "free", "n1"), store.ErrNotFound)
	wantErr(t, "Assign an unknown node", s.Assign(ctx, "vacuum", "free", "n9"), store.ErrNotFound)
	wantTier(t, s, "vacuum", "free")

	v := version(t, s)
	assign(t, s, "vacuum", "free", "n3", "n1", "n2")
	wantTier(t, s, "vacuum", "free", "n3", "n1", "n2")
	wantVersion(t, s, "after three Assigns", v+3)
	assign(t, s, "vacuum", "free", "n1")
	wantTier(t, s, "vacuum", "free", "n3", "n1", "n2")
	wantVersion(t, s, "after a repeated Assign", v+3)

	assign(t, s, "vacuum", "paid", "n2")
	wantTier(t, s, "vacuum", "paid", "n2")
	wantVersion(t, s, "after Assign to a new tier", v+4)

	for i := range 2 {
		if err := s.Unassign(ctx, "vacuum", "free", "n1"); err != nil {
			t.Fatalf("Unassign #%d: %v", i+1, err)
		}
		wantTier(t, s, "vacuum", "free", "n3", "n2")
		wantVersion(t, s, "after Unassign", v+5)
	}
	for _, c := range [][3]string{{"vacuum", "gold", "n1"}, {"nope", "free", "n1"}, {"vacuum", "free", "n9"}} {
		if err := s.Unassign(ctx, c[0], c[1], c[2]); err != nil {
			t.Fatalf("Unassign(%v) of nothing: %v", c, err)
		}
	}
	wantVersion(t, s, "after Unassigns of nothing", v+5)
	// The tier stays, empty.
	if err := s.Unassign(ctx, "vacuum", "paid", "n2"); err != nil {
		t.Fatal(err)
	}
	if nodes, ok := getMap(t, s).Services["vacuum"].Tiers["paid"]; !ok || len(nodes) != 0 {
		t.Fatalf("paid tier after last Unassign = %v (present %v), want empty", nodes, ok)
	}
}

func testSetAssignment(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1", "n2", "n3")
	putService(t, s, "vacuum", "")
	assign(t, s, "vacuum", "free", "n1")
	v := version(t, s)

	got, err := s.SetAssignment(ctx, "vacuum", "free", []string{"n3", "n2"}, v)
	if err != nil || got != v+1 {
		t.Fatalf("SetAssignment = %d, %v; want %d", got, err, v+1)
	}
	wantTier(t, s, "vacuum", "free", "n3", "n2")
	wantVersion(t, s, "after SetAssignment", v+1)

	_, err = s.SetAssignment(ctx, "vacuum", "free", []string{"n1"}, v)
	wantErr(t, "SetAssignment with a stale version", err, store.ErrConflict)
	wantTier(t, s, "vacuum", "free", "n3", "n2")
	_, err = s.SetAssignment(ctx, "vacuum", "free", []string{"n1"}, v+100)
	wantErr(t, "SetAssignment with a future version", err, store.ErrConflict)

	got, err = s.SetAssignment(ctx, "vacuum", "free", []string{"n3", "n2"}, v+1)
	if err != nil || got != v+1 {
		t.Fatalf("SetAssignment of the same nodes = %d, %v; want %d (no change)", got, err, v+1)
	}

	got, err = s.SetAssignment(ctx, "vacuum", "paid", []string{"n1"}, 0)
	if err != nil || got != v+2 {
		t.Fatalf("unconditional SetAssignment to a new tier = %d, %v; want %d", got, err, v+2)
	}
	wantTier(t, s, "vacuum", "paid", "n1")

	got, err = s.SetAssignment(ctx, "vacuum", "paid", nil, got)
	if err != nil || got != v+3 {
		t.Fatalf("emptying SetAssignment = %d, %v; want %d", got, err, v+3)
	}
	if nodes, ok := getMap(t, s).Services["vacuum"].Tiers["paid"]; !ok || len(nodes) != 0 {
		t.Fatalf("emptied tier = %v (present %v)", nodes, ok)
	}

	_, err = s.SetAssignment(ctx, "vacuum", "free", []string{"n1", "n9"}, 0)
	wantErr(t, "SetAssignment with an unknown node", err, store.ErrNotFound)
	_, err = s.SetAssignment(ctx, "nope", "free", []string{"n1"}, 0)
	wantErr(t, "SetAssignment to an unknown service", err, store.ErrNotFound)
	_, err = s.SetAssignment(ctx, "vacuum", "free", []string{"n1", "n1"}, 0)
	wantErr(t, "SetAssignment with a node twice", err, store.ErrInvalid)
	_, err = s.SetAssignment(ctx, "vacuum", "free", []string{"n1"}, -1)
	wantErr(t, "SetAssignment with a negative version", err, store.ErrInvalid)
	wantTier(t, s, "vacuum", "free", "n3", "n2")
	wantVersion(t, s, "after failed SetAssignments", v+3)
}

// run starts n goroutines at once and waits for them.
func run(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			fn(i)
		})
	}
	close(start)
	wg.Wait()
}

func testSetAssignmentRace(t *testing.T, s store.Store) {
	const n = 8
	nodes := make([]string, n)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("n%d", i)
		putNode(t, s, nodes[i])
	}
	putService(t, s, "vacuum", "")
	v := version(t, s)
	errs := make([]error, n)
	run(n, func(i int) {
		_, errs[i] = s.SetAssignment(t.Context(), "vacuum", "free", nodes[i:i+1], v)
	})
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("SetAssignment with version %d succeeded twice (%d and %d)", v, winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("losing SetAssignment: %v, want ErrConflict", err)
		}
	}
	if winner < 0 {
		t.Fatal("every SetAssignment failed")
	}
	wantTier(t, s, "vacuum", "free", nodes[winner])
	wantVersion(t, s, "after the race", v+1)
}

func testConcurrentAssign(t *testing.T, s store.Store) {
	const n = 8
	nodes := make([]string, n)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("n%d", i)
		putNode(t, s, nodes[i])
	}
	putService(t, s, "vacuum", "")
	v := version(t, s)
	errs := make([]error, n)
	run(n, func(i int) { errs[i] = s.Assign(t.Context(), "vacuum", "free", nodes[i]) })
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Assigns: %v", err)
	}
	got := slices.Sorted(slices.Values(tier(t, s, "vacuum", "free")))
	if !slices.Equal(got, nodes) {
		t.Fatalf("after concurrent Assigns the tier is %q, want %q", got, nodes)
	}
	wantVersion(t, s, "after concurrent Assigns", v+n)
}

func testMapVersion(t *testing.T, s store.Store) {
	ctx := t.Context()
	last := version(t, s)
	if last < 0 {
		t.Fatalf("negative initial version %d", last)
	}
	step := func(what string, bump bool, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		v := version(t, s)
		if m := getMap(t, s); m.Version != v {
			t.Fatalf("%s: Map().Version %d, Version() %d", what, m.Version, v)
		}
		switch {
		case bump && v <= last:
			t.Fatalf("%s: version %d did not increase from %d", what, v, last)
		case !bump && v != last:
			t.Fatalf("%s: version moved %d -> %d", what, last, v)
		}
		last = v
	}
	node := store.Node{ID: "n1", URL: nodeURL("n1"), State: store.StateActive}
	step("PutNode new", true, s.PutNode(ctx, node))
	step("PutNode n2", true, s.PutNode(ctx, store.Node{ID: "n2", URL: nodeURL("n2"), State: store.StateActive}))
	node.Capacity = 10
	step("PutNode changed", true, s.PutNode(ctx, node))
	step("PutNode same", false, s.PutNode(ctx, node))
	step("Heartbeat", false, s.Heartbeat(ctx, "n1", store.Load{Connections: 5}, t0))
	step("Leave", false, s.Leave(ctx, "n1"))
	step("SetNodeState", true, s.SetNodeState(ctx, "n1", store.StateDraining))
	step("PutService", true, s.PutService(ctx, "vacuum", "", nil))
	step("Assign", true, s.Assign(ctx, "vacuum", "free", "n1"))
	step("Assign again", false, s.Assign(ctx, "vacuum", "free", "n1"))
	step("Unassign", true, s.Unassign(ctx, "vacuum", "free", "n1"))
	_, err := s.SetAssignment(ctx, "vacuum", "free", []string{"n1", "n2"}, 0)
	step("SetAssignment", true, err)
	step("PutClient", false, s.PutClient(ctx, store.Client{ID: "d1", Service: "vacuum"}))
	step("AddConns", false, s.AddConns(ctx, conns("n1", 0, 2)))
	step("RemoveConns", false, s.RemoveConns(ctx, []string{"n1.c0000"}))
	_, err = s.ReapConns(ctx, "n1")
	step("ReapConns", false, err)
	step("RemoveNode", true, s.RemoveNode(ctx, "n2"))
	step("DeleteService", true, s.DeleteService(ctx, "vacuum"))
}

func testMapSnapshot(t *testing.T, s store.Store) {
	ctx := t.Context()
	empty := getMap(t, s)
	if empty.Nodes == nil || empty.Services == nil || len(empty.Nodes)+len(empty.Services) != 0 {
		t.Fatalf("empty Map = %+v, want empty non-nil maps", empty)
	}
	putNode(t, s, "n1", "n2")
	if err := s.Heartbeat(ctx, "n2", store.Load{Connections: 7, CPU: 0.25}, t0); err != nil {
		t.Fatal(err)
	}
	putService(t, s, "vacuum", "free", "paid")
	putService(t, s, "tv", "")
	assign(t, s, "vacuum", "paid", "n2", "n1")
	m := getMap(t, s)
	if len(m.Nodes) != 2 || m.Nodes["n1"].ID != "n1" || m.Nodes["n1"].URL != nodeURL("n1") {
		t.Fatalf("Map nodes = %+v", m.Nodes)
	}
	if !sameNode(m.Nodes["n2"], getNode(t, s, "n2")) {
		t.Fatalf("Map node n2 = %+v, Node = %+v", m.Nodes["n2"], getNode(t, s, "n2"))
	}
	if len(m.Services) != 2 || m.Services["vacuum"].Name != "vacuum" || m.Services["tv"].DefaultTier != "free" {
		t.Fatalf("Map services = %+v", m.Services)
	}
	if got := m.Services["vacuum"].Tiers["paid"]; !slices.Equal(got, []string{"n2", "n1"}) {
		t.Fatalf("Map vacuum/paid = %q", got)
	}

	// Every snapshot taken while a writer runs is consistent: each node a
	// tier lists exists, and versions never go back.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("x%d", i)
			err := s.PutNode(ctx, store.Node{ID: id, URL: nodeURL(id), State: store.StateActive})
			if err == nil {
				err = s.Assign(ctx, "tv", "free", id)
			}
			if err == nil && i > 0 {
				err = s.RemoveNode(ctx, fmt.Sprintf("x%d", i-1))
			}
			if err != nil {
				t.Errorf("writer: %v", err)
				return
			}
		}
	})
	last := m.Version
	for range 50 {
		m := getMap(t, s)
		if m.Version < last {
			t.Errorf("version went back from %d to %d", last, m.Version)
		}
		last = m.Version
		for tierName, nodes := range m.Services["tv"].Tiers {
			for _, n := range nodes {
				if _, ok := m.Nodes[n]; !ok {
					t.Errorf("snapshot %d: tv/%s lists %s, which is not among its nodes", m.Version, tierName, n)
				}
			}
		}
	}
	close(stop)
	wg.Wait()
}

func testClients(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.Client(ctx, "d1")
	wantErr(t, "Client of an unknown ID", err, store.ErrNotFound)
	c := store.Client{ID: "d1", Service: "vacuum", Tier: "paid"}
	if err := s.PutClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Client(ctx, "d1"); err != nil || got != c {
		t.Fatalf("Client = %+v, %v; want %+v", got, err, c)
	}
	c = store.Client{ID: "d1", Service: "tv"}
	if err := s.PutClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Client(ctx, "d1"); err != nil || got != c {
		t.Fatalf("replaced Client = %+v, %v; want %+v", got, err, c)
	}
	if page, err := s.Clients(ctx, "", 10); err != nil || len(page) != 1 || page[0] != c {
		t.Fatalf("Clients = %+v, %v; want just %+v", page, err, c)
	}
	if err := s.DeleteClient(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Client(ctx, "d1")
	wantErr(t, "Client after DeleteClient", err, store.ErrNotFound)
	wantErr(t, "second DeleteClient", s.DeleteClient(ctx, "d1"), store.ErrNotFound)
	if page, err := s.Clients(ctx, "", 10); err != nil || len(page) != 0 {
		t.Fatalf("Clients after delete = %+v, %v", page, err)
	}
}

func testClientsPaging(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 25
	var want []store.Client
	for i := range n {
		want = append(want, store.Client{ID: fmt.Sprintf("dev-%02d", i), Service: "vacuum", Tier: []string{"", "free", "paid"}[i%3]})
	}
	for _, i := range rand.Perm(n) {
		if err := s.PutClient(ctx, want[i]); err != nil {
			t.Fatal(err)
		}
	}
	var got []store.Client
	after := ""
	for pages := 0; ; pages++ {
		page, err := s.Clients(ctx, after, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 10 || pages > 3 {
			t.Fatalf("page %d has %d clients (limit 10)", pages, len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].ID
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged Clients = %v, want %v", got, want)
	}
	page, err := s.Clients(ctx, "dev-05x", 3) // after an ID that is not stored
	if err != nil || !slices.Equal(page, want[6:9]) {
		t.Fatalf("Clients after dev-05x = %v, %v; want %v", page, err, want[6:9])
	}
	page, err = s.Clients(ctx, "dev-24", 3)
	if err != nil || len(page) != 0 {
		t.Fatalf("Clients after the last = %v, %v", page, err)
	}
	page, err = s.Clients(ctx, "", 1000)
	if err != nil || len(page) != n {
		t.Fatalf("Clients with a large limit = %d, %v", len(page), err)
	}
	for _, limit := range []int{0, -1} {
		_, err := s.Clients(ctx, "", limit)
		wantErr(t, fmt.Sprintf("Clients limit %d", limit), err, store.ErrInvalid)
	}
}

func testConns(t *testing.T, s store.Store) {
	ctx := t.Context()
	if counts, err := s.ConnCounts(ctx); err != nil || len(counts) != 0 {
		t.Fatalf("ConnCounts of an empty store = %v, %v", counts, err)
	}
	if cs, err := s.ConnsOfNode(ctx, "n1"); err != nil || len(cs) != 0 {
		t.Fatalf("ConnsOfNode of an unknown node = %v, %v", cs, err)
	}
	if err := s.AddConns(ctx, nil); err != nil {
		t.Fatalf("AddConns(nil): %v", err)
	}
	n1, n2 := conns("n1", 0, 3), conns("n2", 0, 2)
	batch := slices.Concat(n2[1:], n1, n2[:1])
	batch[0].Node = "" // filled in from the ID
	addConns(t, s, batch)

	c, err := s.Conn(ctx, "n1.c0001")
	if err != nil || !sameConns([]store.Conn{c}, n1[1:2]) {
		t.Fatalf("Conn = %+v, %v; want %+v", c, err, n1[1])
	}
	if c, err := s.Conn(ctx, n2[1].ID); err != nil || c.Node != "n2" {
		t.Fatalf("Conn added without Node = %+v, %v; want node n2", c, err)
	}
	_, err = s.Conn(ctx, "n1.c9999")
	wantErr(t, "Conn of an unknown ID", err, store.ErrNotFound)
	_, err = s.Conn(ctx, "n9.c0000")
	wantErr(t, "Conn of an unknown node", err, store.ErrNotFound)

	for node, want := range map[string][]store.Conn{"n1": n1, "n2": n2} {
		got, err := s.ConnsOfNode(ctx, node)
		if err != nil || !sameConns(got, want) {
			t.Fatalf("ConnsOfNode(%s) = %+v, %v; want %+v", node, got, err, want)
		}
	}
	wantCounts := func(what string, want map[string]int) {
		t.Helper()
		got, err := s.ConnCounts(ctx)
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: ConnCounts = %v, %v; want %v", what, got, err, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: ConnCounts = %v, want %v", what, got, want)
			}
		}
	}
	wantCounts("after AddConns", map[string]int{"n1": 3, "n2": 2})

	// Adding an ID again replaces its record.
	again := n1[0]
	again.Device = "other"
	addConns(t, s, []store.Conn{again})
	if c, err := s.Conn(ctx, again.ID); err != nil || c.Device != "other" {
		t.Fatalf("re-added Conn = %+v, %v", c, err)
	}
	wantCounts("after re-adding", map[string]int{"n1": 3, "n2": 2})

	if err := s.RemoveConns(ctx, []string{"n1.c0000", "n1.c9999", "n7.x1", "n2.c0000"}); err != nil {
		t.Fatal(err)
	}
	wantCounts("after RemoveConns", map[string]int{"n1": 2, "n2": 1})
	_, err = s.Conn(ctx, "n1.c0000")
	wantErr(t, "Conn after RemoveConns", err, store.ErrNotFound)
	if err := s.RemoveConns(ctx, []string{"n2.c0001"}); err != nil {
		t.Fatal(err)
	}
	wantCounts("after removing all of n2", map[string]int{"n1": 2})
	if err := s.RemoveConns(ctx, nil); err != nil {
		t.Fatalf("RemoveConns(nil): %v", err)
	}

	// A bad record fails the whole batch.
	bad := conn("n3", 0)
	bad.Node = "n4"
	err = s.AddConns(ctx, []store.Conn{conn("n3", 1), bad})
	wantErr(t, "AddConns with a node that does not match the ID", err, store.ErrInvalid)
	wantCounts("after a failed AddConns", map[string]int{"n1": 2})
}

func testReapConns(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := conns("n1", 0, 5)
	addConns(t, s, want)
	addConns(t, s, conns("n2", 0, 2))
	got, err := s.ReapConns(ctx, "n1")
	if err != nil || !sameConns(got, want) {
		t.Fatalf("ReapConns = %+v, %v; want %+v", got, err, want)
	}
	if cs, err := s.ConnsOfNode(ctx, "n1"); err != nil || len(cs) != 0 {
		t.Fatalf("ConnsOfNode after ReapConns = %v, %v", cs, err)
	}
	if _, err := s.Conn(ctx, want[0].ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Conn after ReapConns: %v, want ErrNotFound", err)
	}
	counts, err := s.ConnCounts(ctx)
	if err != nil || len(counts) != 1 || counts["n2"] != 2 {
		t.Fatalf("ConnCounts after ReapConns = %v, %v; want n2: 2", counts, err)
	}
	if got, err := s.ReapConns(ctx, "n1"); err != nil || len(got) != 0 {
		t.Fatalf("second ReapConns = %v, %v; want none", got, err)
	}
	// The node's registry is usable again.
	addConns(t, s, want[:1])
	if counts, _ := s.ConnCounts(ctx); counts["n1"] != 1 {
		t.Fatalf("ConnCounts after adding to a reaped node = %v", counts)
	}
}

// reapAll collects what n concurrent reapers of node get, failing on any
// connection returned twice.
func reapAll(t *testing.T, s store.Store, node string, n int, seen map[string]int) {
	t.Helper()
	got := make([][]store.Conn, n)
	errs := make([]error, n)
	run(n, func(i int) { got[i], errs[i] = s.ReapConns(t.Context(), node) })
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent ReapConns: %v", err)
	}
	for _, cs := range got {
		for _, c := range cs {
			seen[c.ID]++
			if seen[c.ID] > 1 {
				t.Fatalf("connection %s reaped twice", c.ID)
			}
		}
	}
}

func testReapConnsConcurrent(t *testing.T, s store.Store) {
	const reapers, per, rounds = 8, 300, 5
	for round := range rounds {
		addConns(t, s, conns("n1", round*per, per))
		seen := map[string]int{}
		reapAll(t, s, "n1", reapers, seen)
		if len(seen) != per {
			t.Fatalf("round %d: %d connections reaped, want %d", round, len(seen), per)
		}
	}
}

func testReapConnsWhileAdding(t *testing.T, s store.Store) {
	const batches, per = 40, 10
	seen := map[string]int{}
	done := make(chan error, 1)
	go func() {
		for b := range batches {
			if err := s.AddConns(t.Context(), conns("n1", b*per, per)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for adding := true; adding; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("AddConns: %v", err)
			}
			adding = false
		default:
		}
		reapAll(t, s, "n1", 4, seen)
	}
	reapAll(t, s, "n1", 1, seen)
	if len(seen) != batches*per {
		t.Fatalf("%d connections reaped, want each of %d once", len(seen), batches*per)
	}
	if counts, err := s.ConnCounts(t.Context()); err != nil || len(counts) != 0 {
		t.Fatalf("ConnCounts after reaping everything = %v, %v", counts, err)
	}
}

func testCopies(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1", "n2")
	tiers := []string{"paid"}
	if err := s.PutService(ctx, "vacuum", "free", tiers); err != nil {
		t.Fatal(err)
	}
	tiers[0] = "gold"
	nodes := []string{"n1", "n2"}
	if _, err := s.SetAssignment(ctx, "vacuum", "free", nodes, 0); err != nil {
		t.Fatal(err)
	}
	nodes[0] = "n9"
	batch := conns("n1", 0, 2)
	addConns(t, s, batch)
	batch[0].Device = "changed"
	if err := s.PutClient(ctx, store.Client{ID: "d1", Service: "vacuum"}); err != nil {
		t.Fatal(err)
	}

	// Change everything the store returned.
	m := getMap(t, s)
	m.Nodes["n1"] = store.Node{ID: "n1", URL: "ws://evil/ws"}
	delete(m.Nodes, "n2")
	svc := m.Services["vacuum"]
	svc.Tiers["free"][0] = "n9"
	svc.Tiers["free"] = append(svc.Tiers["free"], "n9")
	svc.Tiers["gold"] = []string{"n9"}
	svc.DefaultTier = "gold"
	m.Services["vacuum"] = svc
	cl, _ := s.Clients(ctx, "", 10)
	cl[0].Service = "evil"
	cs, _ := s.ConnsOfNode(ctx, "n1")
	cs[0].Device = "evil"
	counts, _ := s.ConnCounts(ctx)
	counts["n1"] = 99

	m = getMap(t, s)
	if len(m.Nodes) != 2 || m.Nodes["n1"].URL != nodeURL("n1") {
		t.Fatalf("changing a Map changed the store's nodes: %v", m.Nodes)
	}
	svc = m.Services["vacuum"]
	if svc.DefaultTier != "free" || len(svc.Tiers) != 2 || !slices.Equal(svc.Tiers["free"], []string{"n1", "n2"}) {
		t.Fatalf("changing a Map or an argument changed the store's service: %+v", svc)
	}
	if c, _ := s.Client(ctx, "d1"); c.Service != "vacuum" {
		t.Fatalf("changing Clients' result changed the store: %+v", c)
	}
	cs, _ = s.ConnsOfNode(ctx, "n1")
	if cs[0].Device != "dev-0" {
		t.Fatalf("changing a result or an argument changed a conn: %+v", cs[0])
	}
	if counts, _ := s.ConnCounts(ctx); counts["n1"] != 2 {
		t.Fatalf("changing ConnCounts' result changed the store: %v", counts)
	}
}

func testInvalid(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1")
	putService(t, s, "vacuum", "")
	long := string(make([]byte, 200))
	node := func(f func(*store.Node)) store.Node {
		n := store.Node{ID: "n2", URL: nodeURL("n2"), State: store.StateActive}
		f(&n)
		return n
	}
	c := conn("n1", 0)
	withConn := func(f func(*store.Conn)) []store.Conn {
		c := c
		f(&c)
		return []store.Conn{c}
	}
	cases := map[string]func() error{
		"PutNode empty ID":       func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.ID = "" })) },
		"PutNode ID with dot":    func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.ID = "a.b" })) },
		"PutNode ID too long":    func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.ID = long })) },
		"PutNode http URL":       func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.URL = "http://h/ws" })) },
		"PutNode empty URL":      func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.URL = "" })) },
		"PutNode URL no host":    func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.URL = "ws:///ws" })) },
		"PutNode empty state":    func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.State = "" })) },
		"PutNode bad state":      func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.State = "up" })) },
		"PutNode capacity":       func() error { return s.PutNode(ctx, node(func(n *store.Node) { n.Capacity = -1 })) },
		"Heartbeat ID":           func() error { return s.Heartbeat(ctx, "n 1", store.Load{}, t0) },
		"Heartbeat negative":     func() error { return s.Heartbeat(ctx, "n1", store.Load{Connections: -1}, t0) },
		"Heartbeat NaN":          func() error { return s.Heartbeat(ctx, "n1", store.Load{CPU: math.NaN()}, t0) },
		"Leave ID":               func() error { return s.Leave(ctx, "") },
		"SetNodeState ID":        func() error { return s.SetNodeState(ctx, "*", store.StateActive) },
		"RemoveNode ID":          func() error { return s.RemoveNode(ctx, ">") },
		"Node ID":                func() error { _, err := s.Node(ctx, ""); return err },
		"PutService name":        func() error { return s.PutService(ctx, "a.b", "", nil) },
		"PutService tier":        func() error { return s.PutService(ctx, "tv", "free", []string{"ok", "no way"}) },
		"PutService default":     func() error { return s.PutService(ctx, "tv", "f*", nil) },
		"DeleteService name":     func() error { return s.DeleteService(ctx, "") },
		"Assign service":         func() error { return s.Assign(ctx, "", "free", "n1") },
		"Assign tier":            func() error { return s.Assign(ctx, "vacuum", "", "n1") },
		"Assign node":            func() error { return s.Assign(ctx, "vacuum", "free", "n.1") },
		"Unassign node":          func() error { return s.Unassign(ctx, "vacuum", "free", "") },
		"SetAssignment tier":     func() error { _, err := s.SetAssignment(ctx, "vacuum", "", nil, 0); return err },
		"SetAssignment node":     func() error { _, err := s.SetAssignment(ctx, "vacuum", "free", []string{""}, 0); return err },
		"PutClient ID":           func() error { return s.PutClient(ctx, store.Client{ID: "", Service: "vacuum"}) },
		"PutClient service":      func() error { return s.PutClient(ctx, store.Client{ID: "d1"}) },
		"PutClient tier":         func() error { return s.PutClient(ctx, store.Client{ID: "d1", Service: "vacuum", Tier: "a b"}) },
		"DeleteClient ID":        func() error { return s.DeleteClient(ctx, "a.b") },
		"Client ID":              func() error { _, err := s.Client(ctx, ""); return err },
		"AddConns ID without .":  func() error { return s.AddConns(ctx, withConn(func(c *store.Conn) { c.ID, c.Node = "n1", "" })) },
		"AddConns empty local":   func() error { return s.AddConns(ctx, withConn(func(c *store.Conn) { c.ID = "n1." })) },
		"AddConns bad local":     func() error { return s.AddConns(ctx, withConn(func(c *store.Conn) { c.ID = "n1.a-b" })) },
		"AddConns bad node part": func() error { return s.AddConns(ctx, withConn(func(c *store.Conn) { c.ID, c.Node = "n*.x", "" })) },
		"AddConns service":       func() error { return s.AddConns(ctx, withConn(func(c *store.Conn) { c.Service = "" })) },
		"AddConns device":        func() error { return s.AddConns(ctx, withConn(func(c *store.Conn) { c.Device = "a.b" })) },
		"AddConns tier":          func() error { return s.AddConns(ctx, withConn(func(c *store.Conn) { c.Tier = "a b" })) },
		"RemoveConns ID":         func() error { return s.RemoveConns(ctx, []string{"n1.c0", "bad"}) },
		"Conn ID":                func() error { _, err := s.Conn(ctx, "n1"); return err },
		"ConnsOfNode node":       func() error { _, err := s.ConnsOfNode(ctx, "n1.c0"); return err },
		"ReapConns node":         func() error { _, err := s.ReapConns(ctx, ""); return err },
	}
	v := version(t, s)
	for name, call := range cases {
		if err := call(); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: error %v, want ErrInvalid", name, err)
		}
	}
	wantVersion(t, s, "after invalid calls", v)
	if m := getMap(t, s); len(m.Nodes) != 1 || len(m.Services) != 1 {
		t.Errorf("invalid calls changed the map: %+v", m)
	}
	if counts, _ := s.ConnCounts(ctx); len(counts) != 0 {
		t.Errorf("invalid calls added connections: %v", counts)
	}
}

func testCanceled(t *testing.T, s store.Store) {
	putNode(t, s, "n1")
	putService(t, s, "vacuum", "")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	n := store.Node{ID: "n2", URL: nodeURL("n2"), State: store.StateActive}
	cases := map[string]func() error{
		"PutNode":       func() error { return s.PutNode(ctx, n) },
		"Heartbeat":     func() error { return s.Heartbeat(ctx, "n1", store.Load{}, t0) },
		"Leave":         func() error { return s.Leave(ctx, "n1") },
		"SetNodeState":  func() error { return s.SetNodeState(ctx, "n1", store.StateSleep) },
		"RemoveNode":    func() error { return s.RemoveNode(ctx, "n1") },
		"Node":          func() error { _, err := s.Node(ctx, "n1"); return err },
		"PutService":    func() error { return s.PutService(ctx, "tv", "", nil) },
		"DeleteService": func() error { return s.DeleteService(ctx, "vacuum") },
		"Assign":        func() error { return s.Assign(ctx, "vacuum", "free", "n1") },
		"Unassign":      func() error { return s.Unassign(ctx, "vacuum", "free", "n1") },
		"SetAssignment": func() error { _, err := s.SetAssignment(ctx, "vacuum", "free", nil, 0); return err },
		"Map":           func() error { _, err := s.Map(ctx); return err },
		"Version":       func() error { _, err := s.Version(ctx); return err },
		"PutClient":     func() error { return s.PutClient(ctx, store.Client{ID: "d1", Service: "vacuum"}) },
		"DeleteClient":  func() error { return s.DeleteClient(ctx, "d1") },
		"Client":        func() error { _, err := s.Client(ctx, "d1"); return err },
		"Clients":       func() error { _, err := s.Clients(ctx, "", 10); return err },
		"AddConns":      func() error { return s.AddConns(ctx, conns("n1", 0, 1)) },
		"RemoveConns":   func() error { return s.RemoveConns(ctx, []string{"n1.c0000"}) },
		"Conn":          func() error { _, err := s.Conn(ctx, "n1.c0000"); return err },
		"ConnsOfNode":   func() error { _, err := s.ConnsOfNode(ctx, "n1"); return err },
		"ReapConns":     func() error { _, err := s.ReapConns(ctx, "n1"); return err },
		"ConnCounts":    func() error { _, err := s.ConnCounts(ctx); return err },
		"Ping":          func() error { return s.Ping(ctx) },
		"Revoke": func() error {
			return s.Revoke(ctx, store.Revocation{Service: "vacuum", TokenID: "j1", Until: t0.Add(time.Hour)})
		},
		"Revocations": func() error { _, err := s.Revocations(ctx, t0); return err },
	}
	v := version(t, s)
	for name, call := range cases {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: error %v, want context.Canceled", name, err)
		}
	}
	wantVersion(t, s, "after cancelled calls", v)
	if _, err := s.Node(t.Context(), "n2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a cancelled PutNode stored the node (%v)", err)
	}
	if counts, _ := s.ConnCounts(t.Context()); len(counts) != 0 {
		t.Errorf("a cancelled AddConns stored connections: %v", counts)
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func revocations(t *testing.T, s store.Store, now time.Time) []store.Revocation {
	t.Helper()
	rs, err := s.Revocations(t.Context(), now)
	if err != nil {
		t.Fatalf("Revocations: %v", err)
	}
	return rs
}

func revoke(t *testing.T, s store.Store, r store.Revocation) {
	t.Helper()
	if err := s.Revoke(t.Context(), r); err != nil {
		t.Fatalf("Revoke %+v: %v", r, err)
	}
}

func sameRevocations(a, b []store.Revocation) bool {
	return slices.EqualFunc(a, b, func(x, y store.Revocation) bool {
		return x.Service == y.Service && x.Device == y.Device && x.TokenID == y.TokenID &&
			x.NotBefore.Equal(y.NotBefore) && x.Until.Equal(y.Until) &&
			x.NotBefore.Location() == time.UTC && x.Until.Location() == time.UTC
	})
}

func testRevocations(t *testing.T, s store.Store) {
	if rs := revocations(t, s, t0); len(rs) != 0 {
		t.Fatalf("empty store has revocations %+v", rs)
	}
	local := time.FixedZone("X", 3600)
	dev := store.Revocation{Service: "vacuum", Device: "vac-1", NotBefore: t0.In(local), Until: t0.Add(48 * time.Hour)}
	revoke(t, s, dev)
	tok := store.Revocation{Service: "vacuum", TokenID: "jti-1", Until: t0.Add(time.Hour)}
	revoke(t, s, tok)
	other := store.Revocation{Service: "aircon", Device: "ac-1", NotBefore: t0, Until: t0.Add(2 * time.Hour)}
	revoke(t, s, other)
	v := version(t, s)

	want := []store.Revocation{other, {Service: "vacuum", Device: "vac-1", NotBefore: t0, Until: t0.Add(48 * time.Hour)}, tok}
	if rs := revocations(t, s, t0); !sameRevocations(rs, want) {
		t.Fatalf("Revocations = %+v, want %+v (in UTC)", rs, want)
	}
	// A device again: the later not-before and the later until win,
	// whichever order they come in.
	revoke(t, s, store.Revocation{Service: "vacuum", Device: "vac-1", NotBefore: t0.Add(-time.Hour), Until: t0.Add(72 * time.Hour)})
	revoke(t, s, store.Revocation{Service: "vacuum", Device: "vac-1", NotBefore: t0.Add(time.Minute), Until: t0.Add(time.Hour)})
	want[1] = store.Revocation{Service: "vacuum", Device: "vac-1", NotBefore: t0.Add(time.Minute), Until: t0.Add(72 * time.Hour)}
	// A token ID again: the later until.
	revoke(t, s, store.Revocation{Service: "vacuum", TokenID: "jti-1", Until: t0.Add(30 * time.Minute)})
	if rs := revocations(t, s, t0); !sameRevocations(rs, want) {
		t.Fatalf("after revoking again: %+v, want %+v", rs, want)
	}
	wantVersion(t, s, "after revocations", v)

	// Past their until, revocations are forgotten for good.
	if rs := revocations(t, s, t0.Add(90*time.Minute)); !sameRevocations(rs, want[:2]) {
		t.Fatalf("after the token's until: %+v, want %+v", rs, want[:2])
	}
	if rs := revocations(t, s, t0); !sameRevocations(rs, want[:2]) {
		t.Fatalf("an expired revocation came back: %+v", rs)
	}
	if rs := revocations(t, s, t0.Add(100*time.Hour)); len(rs) != 0 {
		t.Fatalf("after every until: %+v", rs)
	}
	// Forgotten, a revocation may be recorded anew.
	revoke(t, s, tok)
	if rs := revocations(t, s, t0); !sameRevocations(rs, []store.Revocation{tok}) {
		t.Fatalf("recorded again: %+v", rs)
	}
}

func testRevocationsInvalid(t *testing.T, s store.Store) {
	for name, r := range map[string]store.Revocation{
		"no service":     {Device: "d", NotBefore: t0, Until: t0},
		"bad service":    {Service: "a.b", Device: "d", NotBefore: t0, Until: t0},
		"neither":        {Service: "vacuum", Until: t0},
		"both":           {Service: "vacuum", Device: "d", TokenID: "j", NotBefore: t0, Until: t0},
		"bad device":     {Service: "vacuum", Device: "d>", NotBefore: t0, Until: t0},
		"bad token ID":   {Service: "vacuum", TokenID: "j*", Until: t0},
		"no not-before":  {Service: "vacuum", Device: "d", Until: t0},
		"no until":       {Service: "vacuum", TokenID: "j"},
		"device, no end": {Service: "vacuum", Device: "d", NotBefore: t0},
	} {
		if err := s.Revoke(t.Context(), r); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Revoke %s: %v, want ErrInvalid", name, err)
		}
	}
	if rs := revocations(t, s, t0); len(rs) != 0 {
		t.Fatalf("invalid revocations were stored: %+v", rs)
	}
}
