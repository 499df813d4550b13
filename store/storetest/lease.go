package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/store"
)

// testLease: one holder at a time; the holder may extend; a new holder
// gets a larger token; a lapsed lease can be taken by another.
func testLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.LeaseHolder(ctx, "balancer")
	wantErr(t, "LeaseHolder of a lease never taken", err, store.ErrNotFound)
	a, err := s.AcquireLease(ctx, "balancer", "a", time.Minute)
	if err != nil || a.Token <= 0 || a.Holder != "a" || a.Name != "balancer" {
		t.Fatalf("AcquireLease(a) = %+v, %v", a, err)
	}
	if h, err := s.LeaseHolder(ctx, "balancer"); err != nil || h != a {
		t.Fatalf("LeaseHolder = %+v, %v; want %+v", h, err, a)
	}
	_, err = s.AcquireLease(ctx, "balancer", "b", time.Minute)
	wantErr(t, "AcquireLease of a held lease", err, store.ErrLeaseHeld)
	if err == nil || !strings.Contains(err.Error(), "a") {
		t.Fatalf("ErrLeaseHeld does not name the holder: %v", err)
	}
	again, err := s.AcquireLease(ctx, "balancer", "a", time.Minute)
	if err != nil || again != a {
		t.Fatalf("AcquireLease by its holder = %+v, %v; want the same lease", again, err)
	}
	if err := s.RenewLease(ctx, a, time.Minute); err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	// Another lease name is independent.
	if o, err := s.AcquireLease(ctx, "other", "b", time.Minute); err != nil || o.Holder != "b" {
		t.Fatalf("AcquireLease(other) = %+v, %v", o, err)
	}
	// Released: another takes it, with a larger token; the old holder
	// cannot renew.
	if err := s.ReleaseLease(ctx, a); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	b, err := s.AcquireLease(ctx, "balancer", "b", 100*time.Millisecond)
	if err != nil || b.Token <= a.Token {
		t.Fatalf("AcquireLease(b) after release = %+v, %v; want a token above %d", b, err, a.Token)
	}
	wantErr(t, "RenewLease of a released lease", s.RenewLease(ctx, a, time.Minute), store.ErrLeaseLost)
	if err := s.ReleaseLease(ctx, a); err != nil {
		t.Fatalf("ReleaseLease of a lease already lost: %v", err)
	}
	if h, _ := s.LeaseHolder(ctx, "balancer"); h != b {
		t.Fatalf("releasing a lost lease freed another's: holder %+v", h)
	}
	// Expired: a third takes it without release.
	var c store.Lease
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		c, err = s.AcquireLease(ctx, "balancer", "c", time.Minute)
		return err
	})
	if c.Token <= b.Token {
		t.Fatalf("token after expiry %d, want above %d", c.Token, b.Token)
	}
	wantErr(t, "RenewLease of an expired lease", s.RenewLease(ctx, b, time.Minute), store.ErrLeaseLost)

	for _, bad := range []struct {
		what string
		err  error
	}{
		{"empty holder", func() error { _, err := s.AcquireLease(ctx, "balancer", "", time.Minute); return err }()},
		{"bad name", func() error { _, err := s.AcquireLease(ctx, "a.b", "x", time.Minute); return err }()},
		{"zero ttl", func() error { _, err := s.AcquireLease(ctx, "balancer", "x", 0); return err }()},
		{"holder with a newline", func() error { _, err := s.AcquireLease(ctx, "balancer", "x\ny", time.Minute); return err }()},
		{"renew without token", s.RenewLease(ctx, store.Lease{Name: "balancer", Holder: "c"}, time.Minute)},
	} {
		wantErr(t, bad.what, bad.err, store.ErrInvalid)
	}
}

// testLeaseRace: of many acquiring at once, exactly one gets the lease.
func testLeaseRace(t *testing.T, s store.Store) {
	var won atomic.Int32
	run(16, func(i int) {
		_, err := s.AcquireLease(t.Context(), "race", fmt.Sprintf("h%d", i), time.Minute)
		switch {
		case err == nil:
			won.Add(1)
		case !errors.Is(err, store.ErrLeaseHeld):
			t.Errorf("AcquireLease: %v", err)
		}
	})
	if won.Load() != 1 {
		t.Fatalf("%d holders won the lease, want 1", won.Load())
	}
}

// testApplyChanges: atomic, versioned, fenced writes of tiers and states.
func testApplyChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	putNode(t, s, "n1", "n2", "n3")
	putService(t, s, "vacuum", "")
	putService(t, s, "tv", "")
	assign(t, s, "vacuum", "free", "n1")
	l, err := s.AcquireLease(ctx, "balancer", "me", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := version(t, s)
	got, err := s.ApplyChanges(ctx, l, v, []store.Change{
		{Service: "vacuum", Tier: "free", Nodes: []string{"n1", "n2"}},
		{Service: "tv", Tier: "paid", Nodes: []string{"n3"}},
		{Node: "n3", State: store.StateStandby},
	})
	if err != nil || got != v+1 {
		t.Fatalf("ApplyChanges = %d, %v; want %d (one bump for all)", got, err, v+1)
	}
	wantTier(t, s, "vacuum", "free", "n1", "n2")
	wantTier(t, s, "tv", "paid", "n3")
	if n := getNode(t, s, "n3"); n.State != store.StateStandby {
		t.Fatalf("n3 state %s", n.State)
	}
	// Nothing to change: no bump.
	if got, err := s.ApplyChanges(ctx, l, 0, []store.Change{{Node: "n3", State: store.StateStandby}}); err != nil || got != v+1 {
		t.Fatalf("ApplyChanges without effect = %d, %v", got, err)
	}
	// A stale version, an unknown node or service: nothing at all is applied.
	_, err = s.ApplyChanges(ctx, l, v, []store.Change{{Node: "n3", State: store.StateActive}})
	wantErr(t, "ApplyChanges with a stale version", err, store.ErrConflict)
	_, err = s.ApplyChanges(ctx, l, 0, []store.Change{{Node: "n3", State: store.StateActive}, {Service: "vacuum", Tier: "free", Nodes: []string{"n9"}}})
	wantErr(t, "ApplyChanges with an unknown node", err, store.ErrNotFound)
	_, err = s.ApplyChanges(ctx, l, 0, []store.Change{{Node: "n3", State: store.StateActive}, {Service: "nope", Tier: "free"}})
	wantErr(t, "ApplyChanges to an unknown service", err, store.ErrNotFound)
	if n := getNode(t, s, "n3"); n.State != store.StateStandby {
		t.Fatalf("a failed ApplyChanges changed n3 to %s", n.State)
	}
	wantVersion(t, s, "after failed ApplyChanges", v+1)
	for _, bad := range [][]store.Change{
		{{Service: "vacuum", Tier: "free", Nodes: []string{"n1", "n1"}}},
		{{Service: "vacuum", Tier: "free", Node: "n1", State: store.StateActive}},
		{{Node: "n1", State: "asleep"}},
		{{}},
	} {
		_, err := s.ApplyChanges(ctx, l, 0, bad)
		wantErr(t, fmt.Sprintf("ApplyChanges(%+v)", bad), err, store.ErrInvalid)
	}
	// Fencing: a holder that lost the lease cannot write, even with the
	// right version; the new holder can.
	if err := s.ReleaseLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	next, err := s.AcquireLease(ctx, "balancer", "next", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.ApplyChanges(ctx, l, v+1, []store.Change{{Node: "n1", State: store.StateSleep}})
	wantErr(t, "ApplyChanges by a deposed holder", err, store.ErrLeaseLost)
	// The same holder name with the old token is deposed too.
	stale := next
	stale.Token = l.Token
	_, err = s.ApplyChanges(ctx, stale, v+1, []store.Change{{Node: "n1", State: store.StateSleep}})
	wantErr(t, "ApplyChanges with an old token", err, store.ErrLeaseLost)
	if n := getNode(t, s, "n1"); n.State != store.StateActive {
		t.Fatalf("a deposed write landed: n1 %s", n.State)
	}
	if _, err := s.ApplyChanges(ctx, next, v+1, []store.Change{{Node: "n1", State: store.StateSleep}}); err != nil {
		t.Fatalf("ApplyChanges by the new holder: %v", err)
	}
}

// testRecords: a bounded log, newest first.
func testRecords(t *testing.T, s store.Store) {
	ctx := t.Context()
	if rs, err := s.Records(ctx, "decisions", 10); err != nil || len(rs) != 0 {
		t.Fatalf("Records of an empty log = %q, %v", rs, err)
	}
	for i := range 7 {
		if err := s.AddRecord(ctx, "decisions", []byte(fmt.Sprintf(`{"i":%d}`, i)), 5); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := s.Records(ctx, "decisions", 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, string(r))
	}
	if want := []string{`{"i":6}`, `{"i":5}`, `{"i":4}`, `{"i":3}`, `{"i":2}`}; !slices.Equal(got, want) {
		t.Fatalf("Records = %v, want %v", got, want)
	}
	if rs, _ := s.Records(ctx, "decisions", 2); len(rs) != 2 || string(rs[0]) != `{"i":6}` {
		t.Fatalf("Records(2) = %q", rs)
	}
	wantErr(t, "AddRecord keeping 0", s.AddRecord(ctx, "decisions", []byte("{}"), 0), store.ErrInvalid)
	_, err = s.Records(ctx, "bad name", 1)
	wantErr(t, "Records of a bad name", err, store.ErrInvalid)
}

// testEpoch: the first EnsureEpoch sets it, later ones return the same,
// and Map carries it.
func testEpoch(t *testing.T, s store.Store) {
	ctx := t.Context()
	if m := getMap(t, s); m.Epoch != "" {
		t.Fatalf("epoch of a new store %q", m.Epoch)
	}
	e, err := s.EnsureEpoch(ctx)
	if err != nil || len(e) < 8 {
		t.Fatalf("EnsureEpoch = %q, %v", e, err)
	}
	if again, err := s.EnsureEpoch(ctx); err != nil || again != e {
		t.Fatalf("second EnsureEpoch = %q, %v; want %q", again, err, e)
	}
	if m := getMap(t, s); m.Epoch != e {
		t.Fatalf("Map.Epoch = %q, want %q", m.Epoch, e)
	}
}
