package bus_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
)

func TestPublishEvent(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	subj := bus.MustSubjects("acme.t")
	one, err := nc.SubscribeSync(subj.Events("vacuum"))
	if err != nil {
		t.Fatal(err)
	}
	all, err := nc.SubscribeSync(subj.AllEvents())
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 26, 7, 12, 41, 500_000_000, time.UTC)
	events := []bus.Event{
		{Type: bus.EventConnected, Service: "vacuum", Device: "vac-001", Conn: "node-1.k2x9f0a7", Node: "node-1",
			Tier: "paid", Groups: []string{"floor-2"}, At: at},
		bus.LostEvent("vacuum", "vac-002", "node-2.x", "node-2", "", at.Add(time.Hour), at),
	}
	for _, ev := range events {
		if err := bus.PublishEvent(nc, subj, ev); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range events {
		m, err := one.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "acme.t.svc.vacuum.events" {
			t.Fatalf("subject %q", m.Subject)
		}
		hdr := map[string]string{
			bus.HeaderEvent: want.Type, bus.HeaderService: "vacuum", bus.HeaderDevice: want.Device,
			bus.HeaderConn: want.Conn, bus.HeaderNode: want.Node,
		}
		if want.Tier != "" {
			hdr[bus.HeaderTier] = want.Tier
		}
		got := map[string]string{}
		for k, v := range m.Header {
			if len(v) != 1 {
				t.Fatalf("header %s = %q", k, v)
			}
			got[k] = v[0]
		}
		if !reflect.DeepEqual(got, hdr) {
			t.Fatalf("event %d headers = %v, want %v", i, got, hdr)
		}
		var ev bus.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if !ev.At.Equal(want.At) || !ev.Since.Equal(want.Since) {
			t.Fatalf("event %d times %v %v, want %v %v", i, ev.At, ev.Since, want.At, want.Since)
		}
		ev.At, ev.Since, want.At, want.Since = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if !reflect.DeepEqual(ev, want) {
			t.Fatalf("event %d body = %+v, want %+v", i, ev, want)
		}
		if _, err := all.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("AllEvents subscription: %v", err)
		}
	}

	// The body's field names are the contract of docs/subjects.md.
	m, _ := json.Marshal(events[1])
	var raw map[string]any
	_ = json.Unmarshal(m, &raw)
	for _, k := range []string{"type", "service", "device", "conn", "node", "at", "reason", "since"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("disconnected event lacks %q: %s", k, m)
		}
	}
	for _, k := range []string{"tier", "groups", "code"} {
		if _, ok := raw[k]; ok {
			t.Errorf("disconnected event has empty %q: %s", k, m)
		}
	}
	if raw["reason"] != bus.ReasonNodeLost || raw["type"] != bus.EventDisconnected {
		t.Errorf("LostEvent = %s", m)
	}
	if b, _ := json.Marshal(bus.Event{Type: "connected"}); string(b) != `{"type":"connected","service":"","device":"","conn":"","node":"","at":"0001-01-01T00:00:00Z"}` {
		t.Errorf("zero connected event = %s (since must be left out)", b)
	}
}

func TestPublishEventClosed(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	nc.Close()
	if err := bus.PublishEvent(nc, bus.MustSubjects(""), bus.Event{Type: "connected", Service: "vacuum"}); err == nil {
		t.Fatal("PublishEvent on a closed connection succeeded")
	}
}

// TestReplyJSON pins the reply field names of docs/subjects.md.
func TestReplyJSON(t *testing.T) {
	r := bus.Reply{Node: "node-1", Final: true, Status: bus.StatusAcked, MsgID: "m-1", Delivered: 1, Acked: 1,
		Results: map[string]int{"ok": 1}, Acks: []bus.Ack{{Conn: "node-1.k2x9f0a7", Device: "vac-001", Result: "ok"}}}
	b, _ := json.Marshal(r)
	want := `{"node":"node-1","final":true,"status":"acked","msg_id":"m-1","delivered":1,"acked":1,"results":{"ok":1},"acks":[{"conn":"node-1.k2x9f0a7","device":"vac-001","result":"ok"}]}`
	if string(b) != want {
		t.Fatalf("reply JSON\n got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(bus.Reply{Node: "n", Final: true, Status: bus.StatusOffline})
	if string(b) != `{"node":"n","final":true,"status":"offline","delivered":0,"acked":0}` {
		t.Fatalf("offline reply %s", b)
	}
}
