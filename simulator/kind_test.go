package simulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// A push answered Deferred is acked later with Device.Ack, on the
// connection it came on; once that connection is gone, Ack says so.
func TestDeviceDeferredAck(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	pushes := make(chan simulator.Push, 4)
	var d *simulator.Device
	d = newDevice(t, simulator.DeviceConfig{
		Service: "vacuum", Token: e.Token("vacuum", "vac-1", token.IssueOptions{}), Nodes: []string{n1.URL()},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		OnPush: func(p simulator.Push) (string, []byte) {
			pushes <- p
			return simulator.Deferred, nil
		},
	})
	run(t, d)
	w := waitConnected(t, d)

	replies := make(chan bus.Reply, 1)
	go func() { replies <- push(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`{"n":1}`), nil) }()
	var p simulator.Push
	select {
	case p = <-pushes:
	case <-time.After(5 * time.Second):
		t.Fatal("no push")
	}
	select {
	case r := <-replies:
		t.Fatalf("receipt before the ack: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	if err := d.Ack(p, "later", []byte(`{"done":true}`)); err != nil {
		t.Fatal(err)
	}
	r := <-replies
	if r.Status != bus.StatusAcked || r.Results["later"] != 1 {
		t.Fatalf("receipt %+v", r)
	}

	// A push of an old connection cannot be acked on the new one.
	go func() { replies <- push(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`{"n":2}`), nbHeader(300)) }()
	p = <-pushes
	d.Close()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if w2, ok := d.Welcome(); !ok || w2.Conn == w.Conn {
			return errors.New("not reconnected")
		}
		return nil
	})
	if err := d.Ack(p, "ok", nil); !errors.Is(err, simulator.ErrNotConnected) {
		t.Fatalf("Ack on a gone connection = %v", err)
	}
	<-replies
}

func nbHeader(ms int) nats.Header {
	return nats.Header{bus.HeaderTimeout: {fmt.Sprint(ms)}}
}

// Leave closes the connection normally and ends Run with ErrLeft; Run can
// be called again.
func TestDeviceLeave(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	events, err := e.NC.SubscribeSync(e.Subj.Events("vacuum"))
	if err != nil {
		t.Fatal(err)
	}
	_ = e.NC.Flush()
	d := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Token: e.Token("vacuum", "vac-1", token.IssueOptions{}), Nodes: []string{n1.URL()}})
	// Twice: Run may be called again after it returned.
	for range 2 {
		r := run(t, d)
		waitConnected(t, d)
		d.Leave()
		if err := waitErr(t, r, 5*time.Second); !errors.Is(err, simulator.ErrLeft) {
			t.Fatalf("Run = %v, want ErrLeft", err)
		}
		// The node saw a normal close.
		for {
			m, err := events.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var ev bus.Event
			_ = json.Unmarshal(m.Data, &ev)
			if ev.Type != bus.EventDisconnected {
				continue
			}
			if ev.Code != 1000 {
				t.Fatalf("disconnected with %d (%s), want 1000", ev.Code, ev.Reason)
			}
			break
		}
	}
}

// Gate is waited on before each attempt; OnError hears why attempts fail
// and OnConnected how long the one that worked took.
func TestDeviceGateErrorsAndConnectTime(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	dead := newProxy(t, "") // refuses every connection
	var gates atomic.Int32
	var mu sync.Mutex
	var errs []string
	took := make(chan time.Duration, 1)
	d := newDevice(t, simulator.DeviceConfig{
		Service: "vacuum", Token: e.Token("vacuum", "vac-1", token.IssueOptions{}),
		Nodes:      []string{dead.url(), n1.URL()},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Gate: func(context.Context) error { gates.Add(1); return nil },
		OnError: func(err error) {
			mu.Lock()
			errs = append(errs, err.Error())
			mu.Unlock()
		},
		OnConnected: func(_ protocol.Frame, d time.Duration) { took <- d },
	})
	run(t, d)
	waitConnected(t, d)
	if d := <-took; d <= 0 || d > 10*time.Second {
		t.Fatalf("connect took %v", d)
	}
	if g := gates.Load(); g != 2 {
		t.Fatalf("gate passed %d times, want 2 (one per node tried)", g)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 1 || !strings.Contains(errs[0], dead.url()) {
		t.Fatalf("errors %q", errs)
	}

	// A gate that fails ends Run with its error.
	stop := errors.New("closed")
	d2 := newDevice(t, simulator.DeviceConfig{
		Service: "vacuum", Token: "x", Nodes: []string{n1.URL()},
		Gate: func(context.Context) error { return stop },
	})
	if err := waitErr(t, run(t, d2), 5*time.Second); !errors.Is(err, stop) {
		t.Fatalf("Run = %v", err)
	}
}

func TestAnswersPick(t *testing.T) {
	a := simulator.Answers{OK: 0.5, Rejected: 0.2, Slow: 0.2, Never: 0.1}
	for _, tt := range []struct {
		x    float64
		want string
	}{{0, "ok"}, {0.49, "ok"}, {0.51, "rejected"}, {0.69, "rejected"}, {0.71, "slow"}, {0.89, "slow"}, {0.9, "never"}, {0.999, "never"}} {
		if got := a.Pick(tt.x); got != tt.want {
			t.Errorf("Pick(%v) = %s, want %s", tt.x, got, tt.want)
		}
	}
	if got := (simulator.Answers{}).Pick(0.99); got != "ok" {
		t.Errorf("zero Answers pick %s", got)
	}
	// Shares are relative to their sum.
	if got := (simulator.Answers{OK: 1, Never: 1}).Pick(0.6); got != "never" {
		t.Errorf("Pick(0.6) of 1:1 = %s", got)
	}
}

func TestUnit(t *testing.T) {
	seen := map[float64]bool{}
	var sum float64
	const n = 20000
	for i := range n {
		u := simulator.Unit(7, i, "s1")
		if u < 0 || u >= 1 {
			t.Fatalf("Unit = %v", u)
		}
		if u != simulator.Unit(7, i, "s1") {
			t.Fatal("Unit is not a function of its inputs")
		}
		seen[u] = true
		sum += u
	}
	if len(seen) < n-5 {
		t.Fatalf("only %d distinct values", len(seen))
	}
	if mean := sum / n; mean < 0.48 || mean > 0.52 {
		t.Fatalf("mean %v", mean)
	}
	if simulator.Unit(7, 1, "a") == simulator.Unit(8, 1, "a") || simulator.Unit(7, 1, "a") == simulator.Unit(7, 1, "b") {
		t.Fatal("seed or key ignored")
	}
}

// kindsFleet builds a fleet of kinds against node n.
func kindsFleet(t *testing.T, e *testenv.Env, url string, first, count int, kinds []simulator.Kind, extra func(*simulator.FleetConfig)) *simulator.Fleet {
	t.Helper()
	cfg := simulator.FleetConfig{
		Kinds: kinds, Prefix: "t1-", First: first, Count: count, Seed: 42, Nodes: []string{url},
		Tokens: func(_ context.Context, m simulator.Member) (string, error) {
			return e.Keys.Issue(m.Service, m.ID, token.IssueOptions{Tier: m.Tier, Groups: m.Groups})
		},
	}
	if extra != nil {
		extra(&cfg)
	}
	f, err := simulator.NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A fleet of kinds: IDs, tiers and groups as the kinds say, the same
// members whether split or not, answers in the kinds' shares and the same
// for the same push, upstream at the kinds' pace.
func TestFleetKinds(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	kinds := []simulator.Kind{
		{Name: "vac", Service: "vacuum", Count: 10, Paid: 0.3, Groups: []string{"g1", "g2"},
			Answers: simulator.Answers{OK: 0.5, Rejected: 0.5}, UpstreamEvery: 200 * time.Millisecond, UpstreamBytes: 100},
		{Name: "tv", Count: 4, Answers: simulator.Answers{Never: 1}},
	}
	whole := kindsFleet(t, e, n1.URL(), 0, 0, kinds, nil).Members()
	if len(whole) != 14 || whole[0].ID != "t1-vac-000001" || whole[13].ID != "t1-tv-000004" || whole[13].Service != "tv" {
		t.Fatalf("members %+v", whole)
	}
	paid := 0
	for _, m := range whole[:10] {
		if m.Tier == "paid" {
			paid++
		}
	}
	if paid != 3 || whole[0].Groups[0] != "g1" || whole[1].Groups[0] != "g2" {
		t.Fatalf("paid %d, members %+v", paid, whole[:3])
	}
	a := kindsFleet(t, e, n1.URL(), 0, 6, kinds, nil).Members()
	b := kindsFleet(t, e, n1.URL(), 6, 8, kinds, nil).Members()
	if fmt.Sprint(append(a, b...)) != fmt.Sprint(whole) {
		t.Fatalf("split members differ:\n%v\n%v", append(a, b...), whole)
	}

	var watched atomic.Int32
	f := kindsFleet(t, e, n1.URL(), 0, 0, kinds, func(c *simulator.FleetConfig) {
		c.Watch = func(m simulator.Member, p simulator.Push) { watched.Add(1) }
	})
	ups, err := e.NC.SubscribeSync(e.Subj.Upstream("vacuum"))
	if err != nil {
		t.Fatal(err)
	}
	_ = e.NC.Flush()
	runFleet(t, f)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := f.Stats(); s.Connected != 14 {
			return fmt.Errorf("%d connected", s.Connected)
		}
		return nil
	})
	// The same broadcast, twice: the same answers.
	var results []map[string]int
	for range 2 {
		hdr := nats.Header{bus.HeaderMsgID: {"same"}, bus.HeaderTimeout: {"3000"}}
		r := push(t, e.NC, e.Subj.All("vacuum"), []byte(`{}`), hdr)
		if r.Delivered != 10 || r.Results["ok"]+r.Results["rejected"] != 10 || r.Results["ok"] == 0 || r.Results["rejected"] == 0 {
			t.Fatalf("broadcast receipt %+v", r)
		}
		results = append(results, r.Results)
	}
	if fmt.Sprint(results[0]) != fmt.Sprint(results[1]) {
		t.Fatalf("answers differ for the same push: %v", results)
	}
	if r := push(t, e.NC, e.Subj.All("tv"), []byte(`{}`), nbHeader(200)); r.Status != bus.StatusTimeout || r.Delivered != 4 {
		t.Fatalf("tv never answers, receipt %+v", r)
	}
	if r := push(t, e.NC, e.Subj.Group("vacuum", "g2"), []byte(`{}`), nbHeader(3000)); r.Delivered != 5 {
		t.Fatalf("group g2 receipt %+v", r)
	}
	if w := watched.Load(); w < 29 {
		t.Fatalf("Watch saw %d pushes, want 29", w)
	}
	// Upstream: 10 devices every 200ms, ~50/s; the payload as sized.
	for range 20 {
		m, err := ups.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Data) != 100 {
			t.Fatalf("upstream of %d bytes: %s", len(m.Data), m.Data)
		}
	}
}

// A power cut ends the connections of the devices cut (the node sees them
// go without a close frame); they come back once power returns.
func TestFleetCut(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	var mu sync.Mutex
	connects := map[string]int{}
	f := kindsFleet(t, e, n1.URL(), 0, 0, []simulator.Kind{{Name: "vacuum", Count: 6, MinBackoff: 10 * time.Millisecond}},
		func(c *simulator.FleetConfig) {
			c.OnConnected = func(m simulator.Member, _ protocol.Frame, _ time.Duration) {
				mu.Lock()
				connects[m.ID]++
				mu.Unlock()
			}
		})
	runFleet(t, f)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := f.Stats(); s.Connected != 6 {
			return fmt.Errorf("%d connected", s.Connected)
		}
		return nil
	})
	cut := f.Cut([]int{0, 2, 4, 99}, 300*time.Millisecond, 100*time.Millisecond)
	if fmt.Sprint(cut) != "[0 2 4]" {
		t.Fatalf("cut %v", cut)
	}
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if s := f.Stats(); s.Connected != 3 {
			return fmt.Errorf("%d connected", s.Connected)
		}
		return nil
	})
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := f.Stats(); s.Connected != 6 {
			return fmt.Errorf("%d connected", s.Connected)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i, m := range f.Members() {
		want := 1
		if i%2 == 0 {
			want = 2
		}
		if connects[m.ID] != want {
			t.Fatalf("connects %v", connects)
		}
	}
	if s := f.Stats(); s.Closes["1006 code_1006: EOF"] != 0 && s.Stopped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// Sessions: a device of a kind with a session length leaves (1000) after
// it and comes back after its offline time; a refused device gives up,
// and why is counted.
func TestFleetSessionsAndReasons(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	var connects atomic.Int32
	wrong, err := token.NewKeyring(map[string][]token.Key{"tv": {{ID: "tv-test", HMACSecret: "not-the-tv-secret-0123456789abcdefgh"}}})
	if err != nil {
		t.Fatal(err)
	}
	f := kindsFleet(t, e, n1.URL(), 0, 0, []simulator.Kind{
		{Name: "vacuum", Count: 2, SessionLength: 200 * time.Millisecond, Offline: 100 * time.Millisecond},
		{Name: "tv", Count: 1},
	}, func(c *simulator.FleetConfig) {
		c.OnConnected = func(simulator.Member, protocol.Frame, time.Duration) { connects.Add(1) }
		good := c.Tokens
		c.Tokens = func(ctx context.Context, m simulator.Member) (string, error) {
			if m.Service == "tv" {
				return wrong.Issue(m.Service, m.ID, token.IssueOptions{})
			}
			return good(ctx, m)
		}
	})
	runFleet(t, f)
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if c := connects.Load(); c < 6 {
			return fmt.Errorf("%d connects", c)
		}
		s := f.Stats()
		if s.Stopped != 1 || len(s.StopReasons) != 1 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	s := f.Stats()
	var normal, bad int64
	for k, v := range s.Closes {
		switch {
		case strings.HasPrefix(k, "1000 normal"):
			normal += v
		case strings.HasPrefix(k, "4001 bad_token"):
			bad += v
		}
	}
	if normal < 2 || bad != 1 {
		t.Fatalf("closes %v", s.Closes)
	}
	lines := simulator.TopReasons(s.StopReasons, 3)
	if len(lines) != 1 || !strings.Contains(lines[0], "bad_token") {
		t.Fatalf("stop reasons %q", lines)
	}
}
