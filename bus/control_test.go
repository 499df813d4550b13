package bus_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
)

func TestMapChangedRoundTrip(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	subj := bus.MustSubjects("")
	sub, err := nc.SubscribeSync(subj.MapChanged())
	if err != nil {
		t.Fatal(err)
	}
	want := []bus.MapChanged{
		{Source: bus.SourceNode, Node: "node-1", Reason: bus.ReasonStarted},
		{Version: 42, Source: bus.SourceDirectory, Reason: bus.ReasonAdmin},
		{Version: 43, Source: bus.SourceBalancer, Service: "vacuum", Node: "node-2", Reason: bus.ReasonBalance},
	}
	for _, m := range want {
		if err := bus.PublishMapChanged(nc, subj, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range want {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got, err := bus.ParseMapChanged(msg.Data)
		if err != nil || got != w {
			t.Errorf("ParseMapChanged(%s) = %+v, %v; want %+v", msg.Data, got, err, w)
		}
	}
	if !want[1].ClientsMayHaveChanged() || want[0].ClientsMayHaveChanged() || want[2].ClientsMayHaveChanged() {
		t.Error("ClientsMayHaveChanged: only admin changes touch client mappings")
	}
	for _, bad := range []string{``, `{`, `{"version":1}`, `{"source":"martian","reason":"x"}`, `[]`} {
		if _, err := bus.ParseMapChanged([]byte(bad)); !errors.Is(err, bus.ErrBadMessage) {
			t.Errorf("ParseMapChanged(%q) = %v, want ErrBadMessage", bad, err)
		}
	}
}

func TestNodeStatsRoundTrip(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	subj := bus.MustSubjects("")
	sub, err := nc.SubscribeSync(subj.AllNodeStats())
	if err != nil {
		t.Fatal(err)
	}
	st := bus.NodeStats{
		Node: "node-1", URL: "ws://127.0.0.1:1/ws", At: time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC), Connections: 3,
		Services: map[string]bus.ServiceStats{"vacuum": {Connections: map[string]int{"paid": 1, "free": 2}, Pushes: 10, Bytes: 100}},
		CPU:      0.25, Class: "high-spec", Capacity: 1000, IntervalMS: 5000,
	}
	if err := bus.PublishNodeStats(nc, subj, st); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != subj.NodeStats("node-1") {
		t.Errorf("subject %s", m.Subject)
	}
	got, err := bus.ParseNodeStats(m.Data)
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("ParseNodeStats = %+v, %v; want %+v", got, err, st)
	}
	for _, bad := range []string{`{`, `{"node":""}`, `{"node":"a.b"}`} {
		if _, err := bus.ParseNodeStats([]byte(bad)); !errors.Is(err, bus.ErrBadMessage) {
			t.Errorf("ParseNodeStats(%q) = %v", bad, err)
		}
	}
}

func TestControlRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"op":"info"}`, true},
		{`{"op":"drain"}`, true},
		{`{"op":"drain","service":"vacuum","grace_ms":2000,"rate":100,"reason":"balance"}`, true},
		{`{"op":"set_state","state":"standby"}`, true},
		{`{"op":"set_state","state":"active"}`, true},
		{`{"op":"set_state","state":"sleep","grace_ms":10}`, true},
		{`{"op":"set_state","state":"draining"}`, false},
		{`{"op":"set_state"}`, false},
		{`{"op":"drain","service":"a.b"}`, false},
		{`{"op":"drain","grace_ms":-1}`, false},
		{`{"op":"drain","rate":-5}`, false},
		{`{"op":"reboot"}`, false},
		{`{}`, false},
		{`not json`, false},
	} {
		r, err := bus.ParseControlRequest([]byte(tc.body))
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, bus.ErrBadMessage)) {
			t.Errorf("ParseControlRequest(%s) = %+v, %v; want ok %v", tc.body, r, err, tc.ok)
		}
	}
	r, _ := bus.ParseControlRequest([]byte(`{"op":"drain","grace_ms":1500}`))
	if r.Grace() != 1500*time.Millisecond {
		t.Errorf("Grace = %v", r.Grace())
	}
}

// RequestControl talks to whatever answers a node's control subject; here a
// stand-in that echoes what it was asked.
func TestRequestControl(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	subj := bus.MustSubjects("")
	_, err := nc.Subscribe(subj.NodeCtl("n1"), func(m *nats.Msg) {
		req, err := bus.ParseControlRequest(m.Data)
		r := bus.ControlReply{Node: "n1", OK: err == nil && req.Op != bus.OpSetState, State: "active", Connections: 7}
		if !r.OK {
			r.Error = "refused"
		}
		_ = m.Respond(r.Encode())
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := bus.RequestControl(ctx, nc, subj, "n1", bus.ControlRequest{Op: bus.OpInfo})
	if err != nil || r.Node != "n1" || r.Connections != 7 || !r.OK {
		t.Fatalf("info: %+v %v", r, err)
	}
	if _, err := bus.RequestControl(ctx, nc, subj, "n1", bus.ControlRequest{Op: bus.OpSetState, State: "sleep"}); !errors.Is(err, bus.ErrControl) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("refused request: %v", err)
	}
	if _, err := bus.RequestControl(ctx, nc, subj, "n1", bus.ControlRequest{Op: "bogus"}); !errors.Is(err, bus.ErrBadMessage) {
		t.Fatalf("invalid request: %v", err)
	}
	if _, err := bus.RequestControl(ctx, nc, subj, "nobody", bus.ControlRequest{Op: bus.OpInfo}); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("no such node: %v", err)
	}
}

func TestTakeover(t *testing.T) {
	subj := bus.MustSubjects("")
	secret := []byte("a-cluster-secret-of-some-length")
	to := bus.Takeover{Service: "vacuum", Device: "vac-1", Conn: "n1.abc", Since: 1764288000000000000}
	target := func(m *nats.Msg) bus.Target {
		tg, err := subj.ParsePush(m.Subject)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	m := to.Msg(subj, secret)
	if m.Subject != subj.Device("vacuum", "vac-1") || m.Reply != "" || len(m.Data) != 0 {
		t.Fatalf("takeover message %+v", m)
	}
	if got, err := bus.ParseTakeover(m, target(m), secret); err != nil || got != to {
		t.Fatalf("ParseTakeover = %+v, %v", got, err)
	}
	// Another secret, a forged field, or no signature: refused.
	if _, err := bus.ParseTakeover(m, target(m), []byte("another-secret-entirely-0000")); !errors.Is(err, bus.ErrBadSignature) {
		t.Errorf("other secret: %v", err)
	}
	forged := to.Msg(subj, secret)
	forged.Header.Set(bus.HeaderConn, "n9.zzz")
	if _, err := bus.ParseTakeover(forged, target(forged), secret); !errors.Is(err, bus.ErrBadSignature) {
		t.Errorf("forged conn: %v", err)
	}
	unsigned := to.Msg(subj, nil)
	if _, err := bus.ParseTakeover(unsigned, target(unsigned), secret); !errors.Is(err, bus.ErrBadSignature) {
		t.Errorf("unsigned: %v", err)
	}
	// Without a secret, anything well formed is taken.
	if got, err := bus.ParseTakeover(unsigned, target(unsigned), nil); err != nil || got != to {
		t.Errorf("no secret: %+v %v", got, err)
	}
	// Not on a device subject, or malformed.
	g := nats.NewMsg(subj.Group("vacuum", "g"))
	g.Header = m.Header
	if _, err := bus.ParseTakeover(g, target(g), nil); !errors.Is(err, bus.ErrBadMessage) {
		t.Errorf("on a group subject: %v", err)
	}
	bad := to.Msg(subj, nil)
	bad.Header.Set("Tether-Since", "yesterday")
	if _, err := bus.ParseTakeover(bad, target(bad), nil); !errors.Is(err, bus.ErrBadMessage) {
		t.Errorf("bad since: %v", err)
	}
}

func FuzzParseControlRequest(f *testing.F) {
	f.Add([]byte(`{"op":"drain","service":"vacuum","grace_ms":2000,"rate":100}`))
	f.Add([]byte(`{"op":"set_state","state":"standby"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := bus.ParseControlRequest(b)
		if err != nil {
			return
		}
		if r.Validate() != nil {
			t.Fatalf("accepted an invalid request %+v", r)
		}
	})
}

func FuzzParseMapChanged(f *testing.F) {
	f.Add([]byte(`{"source":"node","node":"n1","reason":"started"}`))
	f.Add([]byte(`{"version":3,"source":"directory","reason":"admin"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := bus.ParseMapChanged(b)
		if err != nil {
			return
		}
		switch m.Source {
		case bus.SourceDirectory, bus.SourceNode, bus.SourceBalancer:
		default:
			t.Fatalf("accepted source %q", m.Source)
		}
	})
}
