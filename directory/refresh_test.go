package directory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testutil"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
	"github.com/tetherhq/tether/directory"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/store/redistest"
)

func lookupIs(t testing.TB, base, query string, want ...string) func() error {
	return func() error {
		l, a := getLookup(t, base, query)
		if a.Status != 200 {
			return fmt.Errorf("%s: status %d: %s", query, a.Status, a.Body)
		}
		return sameSet(l.HandshakeURL, want...)
	}
}

// A direct store change reaches the answers when tether.map.changed is
// published, long before the periodic refresh.
func TestRefreshOnMapChangedEvent(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		ns := natstest.RunServer(t)
		nc := natstest.Connect(t, ns)
		seedMap(t, st)
		base := startDir(t, st, nc, func(c *directory.Config) {
			c.HeartbeatInterval = time.Hour
			c.RefreshInterval = 30 * time.Minute
		}).URL()
		if err := lookupIs(t, base, "service=aircon", urls("a1")...)(); err != nil {
			t.Fatal(err)
		}
		if err := st.Assign(t.Context(), "aircon", "free", "f1"); err != nil {
			t.Fatal(err)
		}
		v, _ := st.Version(t.Context())
		if err := nc.Publish(bus.MustSubjects("").MapChanged(), fmt.Appendf(nil, `{"version":%d}`, v)); err != nil {
			t.Fatal(err)
		}
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, lookupIs(t, base, "service=aircon", urls("a1", "f1")...))

		// Client mappings are re-read after an event too.
		if err := st.PutClient(t.Context(), store.Client{ID: "dev-free", Service: "vacuum", Tier: "paid"}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(bus.MustSubjects("").MapChanged(), []byte(`{"version":0}`)); err != nil {
			t.Fatal(err)
		}
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, lookupIs(t, base, "client=dev-free", urls("p1", "p2")...))
	})
}

// Without any event, the periodic refresh picks up changes and heartbeats.
func TestRefreshPeriodic(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		seedMap(t, st)
		base := startDir(t, st, nil, func(c *directory.Config) { c.RefreshInterval = 50 * time.Millisecond }).URL()
		if err := st.Assign(t.Context(), "aircon", "free", "f2"); err != nil {
			t.Fatal(err)
		}
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, lookupIs(t, base, "service=aircon", urls("a1", "f2")...))
		// A node that was dead heartbeats again: it comes back.
		if err := st.Assign(t.Context(), "aircon", "free", "d1"); err != nil {
			t.Fatal(err)
		}
		if err := st.Heartbeat(t.Context(), "d1", store.Load{}, time.Now()); err != nil {
			t.Fatal(err)
		}
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, lookupIs(t, base, "service=aircon", urls("a1", "f2", "d1")...))
	})
}

// The admin API refreshes the local copy at once and announces the change
// on tether.map.changed.
func TestRefreshOnAdminChange(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	st := store.NewMemory()
	seedMap(t, st)
	ch := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(bus.MustSubjects("").MapChanged(), ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	base := startDir(t, st, nc, func(c *directory.Config) {
		c.HeartbeatInterval = time.Hour
		c.RefreshInterval = 30 * time.Minute
	}).URL()
	ac, err := directory.NewAdminClient(base, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := ac.Assign(t.Context(), "aircon", "free", "p1")
	if err != nil {
		t.Fatal(err)
	}
	// No polling: the answer right after the change has it.
	if err := lookupIs(t, base, "service=aircon", urls("a1", "p1")...)(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		var body struct {
			Version int64 `json:"version"`
		}
		if err := json.Unmarshal(m.Data, &body); err != nil || body.Version != v {
			t.Errorf("map.changed %s, want version %d", m.Data, v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no tether.map.changed after an admin change")
	}
}

// With Redis stopped the directory answers from its cached map, marked
// stale, and keeps listing the nodes that were live when it last read the
// map; once Redis is back the marker goes and changes flow again.
func TestStoreDown(t *testing.T) {
	rs := redistest.StartServer(t)
	st := openRedis(t, rs.URL())
	seedMap(t, st)
	srv := startDir(t, st, nil, func(c *directory.Config) {
		c.HeartbeatInterval = 200 * time.Millisecond // dead after 1.4s
		c.RefreshInterval = 50 * time.Millisecond
		c.StoreTimeout = 500 * time.Millisecond
	})
	base := srv.URL()
	// Keep the test's nodes heartbeating, as running nodes would.
	ctx, cancel := context.WithCancel(context.Background())
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, id := range []string{"p1", "p2", "f1", "f2", "a1"} {
				bctx, bcancel := context.WithTimeout(ctx, 100*time.Millisecond)
				_ = st.Heartbeat(bctx, id, store.Load{}, time.Now())
				bcancel()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { cancel(); <-beats }()

	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, lookupIs(t, base, "service=vacuum", urls("f1", "f2")...))
	// Cache the clients we will ask for while Redis is down.
	for _, q := range []string{"client=dev-paid", "client=nobody"} {
		getLookup(t, base, q)
	}

	rs.Stop()
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		_, a := getLookup(t, base, "service=vacuum")
		if a.Header.Get("X-Tether-Stale") != "true" {
			return fmt.Errorf("no stale marker yet: %d %v", a.Status, a.Header)
		}
		return nil
	})
	var h struct {
		Status     string     `json:"status"`
		Store      string     `json:"store"`
		StaleSince *time.Time `json:"stale_since"`
	}
	a := get(t, base+"/healthz")
	a.json(t, &h)
	if a.Status != 200 || h.Status != "degraded" || h.Store != "unavailable" || h.StaleSince == nil {
		t.Errorf("healthz while Redis is down: %d %s", a.Status, a.Body)
	}
	// Every lookup form answers from the cache, stale, for longer than a
	// node's dead-after: liveness is judged as of the last read.
	deadline := time.Now().Add(2 * time.Second)
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for ; time.Now().Before(deadline); <-pace.C {
		for _, tc := range []struct {
			q     string
			nodes []string
		}{
			{"service=vacuum", urls("f1", "f2")},
			{"client=dev-paid", urls("p1", "p2")},
			{"service=vacuum&client=dev-paid", urls("p1", "p2")},
		} {
			l, a := getLookup(t, base, tc.q)
			if a.Status != 200 || a.Header.Get("X-Tether-Stale") != "true" || a.Header.Get("Warning") == "" || a.Header.Get("X-Tether-Stale-Since") == "" {
				t.Fatalf("%s while Redis is down: %d %v %s", tc.q, a.Status, a.Header, a.Body)
			}
			if err := sameSet(l.HandshakeURL, tc.nodes...); err != nil {
				t.Fatalf("%s while Redis is down: %v", tc.q, err)
			}
		}
		if _, a := getLookup(t, base, "client=nobody"); a.Status != 404 || a.Header.Get("X-Tether-Stale") != "true" {
			t.Fatalf("cached unknown client while Redis is down: %d %v", a.Status, a.Header)
		}
		if _, a := getLookup(t, base, "client=never-seen"); a.Status != 503 || a.errCode(t) != directory.CodeStoreUnavailable {
			t.Fatalf("uncached client while Redis is down: %d %s", a.Status, a.Body)
		}
		if a := get(t, base+"/v1/map"); a.Status != 200 || a.Header.Get("X-Tether-Stale") != "true" || !strings.Contains(string(a.Body), nodeURL("f1")) {
			t.Fatalf("map while Redis is down: %d %s", a.Status, a.Body)
		}
	}
	ac, err := directory.NewAdminClient(base, adminToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Assign(t.Context(), "aircon", "free", "p1"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("admin change while Redis is down: %v, want a 503", err)
	}

	// Redis comes back empty (redistest's servers keep no data): seed it
	// again, as an operator would.
	rs.Restart()
	// go-redis backs off dialing after a run of failed dials: wait until the
	// store's client is through it.
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error { return st.Ping(t.Context()) })
	seedMap(t, st)
	testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, a := getLookup(t, base, "service=vacuum")
		if a.Status != 200 || a.Header.Get("X-Tether-Stale") != "" {
			return fmt.Errorf("still stale: %d %v %s", a.Status, a.Header, a.Body)
		}
		a = get(t, base+"/healthz")
		h.StaleSince = nil
		a.json(t, &h)
		if h.Store != "ok" || h.Status != "ok" || h.StaleSince != nil {
			return fmt.Errorf("healthz: %s", a.Body)
		}
		return nil
	})
	if _, err := ac.Assign(t.Context(), "aircon", "free", "p1"); err != nil {
		t.Fatal(err)
	}
	if err := lookupIs(t, base, "service=aircon", urls("a1", "p1")...)(); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.PutClient(t.Context(), "dev-new", directory.ClientSpec{Service: "vacuum", Tier: "paid"}); err != nil {
		t.Fatal(err)
	}
	if err := lookupIs(t, base, "client=dev-new", urls("p1", "p2")...)(); err != nil {
		t.Fatal(err)
	}
}

// At the edges of a Redis outage (a refresh hanging on a frozen Redis
// before the outage is known; the first reads after it, before the nodes
// had a chance to heartbeat again) the directory keeps listing the nodes
// that were live: a live node never drops out of a lookup.
func TestNoGapAroundStoreFreeze(t *testing.T) {
	rs := redistest.StartServer(t)
	st := openRedis(t, rs.URL())
	seedMap(t, st)
	srv := startDir(t, st, nil, func(c *directory.Config) {
		c.HeartbeatInterval = 200 * time.Millisecond // dead after 1.4s
		c.RefreshInterval = 300 * time.Millisecond
		// A hanging refresh gives up only after a node's heartbeat would
		// have expired: the outage is known too late to freeze liveness.
		c.StoreTimeout = 1200 * time.Millisecond
	})
	base := srv.URL()
	ctx, cancel := context.WithCancel(context.Background())
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			bctx, bcancel := context.WithTimeout(ctx, 150*time.Millisecond)
			_ = st.Heartbeat(bctx, "a1", store.Load{}, time.Now())
			bcancel()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { cancel(); <-beats }()
	testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, lookupIs(t, base, "service=aircon", urls("a1")...))
	check := func(phase string, d time.Duration) {
		t.Helper()
		polls := 0
		for end := time.Now().Add(d); time.Now().Before(end); polls++ {
			if err := lookupIs(t, base, "service=aircon", urls("a1")...)(); err != nil {
				t.Fatalf("%s, poll %d: %v", phase, polls, err)
			}
			time.Sleep(20 * time.Millisecond) // the poll rate of the check, not a wait
		}
	}
	rs.Freeze()
	check("Redis frozen", 3*time.Second)
	rs.Thaw()
	check("Redis back", 3*time.Second)
}

// A Redis that restarts empty is noticed (its epoch changed): the
// directory applies its seed again and says so in /healthz; without a seed
// /healthz reports the empty store instead of "ok".
func TestReseedAfterEmptyRestart(t *testing.T) {
	for _, withSeed := range []bool{true, false} {
		t.Run(fmt.Sprintf("seed=%v", withSeed), func(t *testing.T) {
			rs := redistest.StartServer(t)
			st := openRedis(t, rs.URL())
			seed := store.Seed{
				Nodes:    []store.SeedNode{{ID: "f1", URL: nodeURL("f1")}},
				Services: map[string]store.SeedService{"vacuum": {DefaultTier: "free", Tiers: map[string][]string{"free": {"f1"}}}},
			}
			if err := seed.Apply(t.Context(), st); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			cfg.RefreshInterval = 100 * time.Millisecond
			d := directory.Deps{Store: st, Keys: testKeys(t), Log: testLog(t)}
			if withSeed {
				d.Seed = &seed
			}
			srv, err := directory.New(cfg, d)
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
			base := srv.URL()
			ctx, cancel := context.WithCancel(context.Background())
			beats := make(chan struct{})
			go func() { // the node, heartbeating (ErrNotFound while its record is gone)
				defer close(beats)
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for {
					bctx, bcancel := context.WithTimeout(ctx, 100*time.Millisecond)
					_ = st.Heartbeat(bctx, "f1", store.Load{}, time.Now())
					bcancel()
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
				}
			}()
			defer func() { cancel(); <-beats }()
			testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, lookupIs(t, base, "service=vacuum", urls("f1")...))
			type healthz struct {
				Status      string `json:"status"`
				Store       string `json:"store"`
				Services    int    `json:"services"`
				StoreResets int    `json:"store_resets"`
				Reseeded    bool   `json:"reseeded"`
			}
			var h healthz
			get(t, base+"/healthz").json(t, &h)
			if h.Status != "ok" || h.StoreResets != 0 || h.Services != 1 {
				t.Fatalf("healthz before: %+v", h)
			}

			rs.Restart()
			testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				var h healthz
				get(t, base+"/healthz").json(t, &h)
				if h.StoreResets != 1 {
					return fmt.Errorf("healthz: %+v", h)
				}
				if withSeed && (h.Status != "ok" || !h.Reseeded || h.Services != 1) {
					return fmt.Errorf("healthz: %+v", h)
				}
				if !withSeed && (h.Status != "degraded" || h.Store != "empty" || h.Reseeded) {
					return fmt.Errorf("healthz: %+v", h)
				}
				return nil
			})
			if !withSeed {
				if _, a := getLookup(t, base, "service=vacuum"); a.Status != 404 {
					t.Fatalf("lookup of an emptied store without a seed: %d %s", a.Status, a.Body)
				}
				return
			}
			testutil.CheckFor(t, 5*time.Second, 20*time.Millisecond, lookupIs(t, base, "service=vacuum", urls("f1")...))
			if m := get(t, base+"/metrics"); !strings.Contains(string(m.Body), "tether_directory_reseeds_total 1") {
				t.Errorf("metrics: no reseed counted:\n%s", m.Body)
			}
		})
	}
}
