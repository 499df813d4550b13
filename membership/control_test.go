package membership_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/store"
)

// nodeOf returns the node a device is connected to, or "" when it is not.
func nodeOf(d *simulator.Device) string {
	w, ok := d.Welcome()
	if !ok {
		return ""
	}
	return w.Node
}

// A drain of one service, asked on the node's control subject, moves that
// service's devices to another node and leaves the others where they are.
func TestControlDrainOneService(t *testing.T) {
	e := testenv.New(t)
	st := store.NewMemory()
	n1, _ := e.StartMember(testenv.FastConfig("n1"), st)
	n2, _ := e.StartMember(testenv.FastConfig("n2"), st)
	nodes := []string{n1.URL(), n2.URL()}
	var vacs, airs []*simulator.Device
	for i := range 3 {
		d, _ := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: nodes}, fmt.Sprintf("vac-%d", i))
		vacs = append(vacs, d)
	}
	for i := range 2 {
		d, _ := e.Device(simulator.DeviceConfig{Service: "aircon", Nodes: nodes}, fmt.Sprintf("air-%d", i))
		airs = append(airs, d)
	}
	for _, d := range append(append([]*simulator.Device{}, vacs...), airs...) {
		if nodeOf(d) != "n1" {
			t.Fatalf("device on %q before the drain, want n1", nodeOf(d))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := bus.RequestControl(ctx, e.NC, e.Subj, "n1", bus.ControlRequest{Op: bus.OpDrain, Service: "vacuum", GraceMS: 3000, Rate: 50, Reason: "balance"})
	if err != nil || !r.OK || r.Draining != 3 || r.Node != "n1" || r.State != "active" {
		t.Fatalf("drain reply %+v, %v", r, err)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i, d := range vacs {
			if nodeOf(d) != "n2" {
				return fmt.Errorf("vacuum device %d on %q", i, nodeOf(d))
			}
		}
		return nil
	})
	for i, d := range airs {
		if nodeOf(d) != "n1" || d.Stats().Connects != 1 {
			t.Errorf("aircon device %d on %q after %d connects: the drain of vacuum moved it", i, nodeOf(d), d.Stats().Connects)
		}
	}
	// The node keeps serving: still registered, still active.
	if rec, err := st.Node(ctx, "n1"); err != nil || rec.State != store.StateActive {
		t.Errorf("n1 after a service drain: %+v %v", rec, err)
	}
}

// set_state puts a node in standby (draining all its devices away), and
// back; the state lands in the store and the directories are told.
func TestControlSetState(t *testing.T) {
	e := testenv.New(t)
	st := store.NewMemory()
	n1, _ := e.StartMember(testenv.FastConfig("n1"), st)
	n2, _ := e.StartMember(testenv.FastConfig("n2"), st)
	d, _ := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL(), n2.URL()}}, "vac-1")
	changes, err := e.NC.SubscribeSync(e.Subj.MapChanged())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := bus.RequestControl(ctx, e.NC, e.Subj, "n1", bus.ControlRequest{Op: bus.OpSetState, State: "standby", GraceMS: 2000})
	if err != nil || r.State != "standby" || r.Draining != 1 {
		t.Fatalf("set_state reply %+v, %v", r, err)
	}
	if rec, _ := st.Node(ctx, "n1"); rec.State != store.StateStandby {
		t.Fatalf("store state %s", rec.State)
	}
	m, err := changes.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if mc, err := bus.ParseMapChanged(m.Data); err != nil || mc.Source != bus.SourceNode || mc.Node != "n1" || mc.Reason != bus.ReasonState {
		t.Fatalf("map changed %s (%v)", m.Data, err)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if nodeOf(d) != "n2" {
			return fmt.Errorf("device on %q", nodeOf(d))
		}
		return nil
	})
	if r, err := bus.RequestControl(ctx, e.NC, e.Subj, "n1", bus.ControlRequest{Op: bus.OpInfo}); err != nil || r.State != "standby" || r.Connections != 0 {
		t.Fatalf("info %+v %v", r, err)
	}
	if r, err := bus.RequestControl(ctx, e.NC, e.Subj, "n1", bus.ControlRequest{Op: bus.OpSetState, State: "active"}); err != nil || r.State != "active" || r.Draining != 0 {
		t.Fatalf("back to active: %+v %v", r, err)
	}
	if rec, _ := st.Node(ctx, "n1"); rec.State != store.StateActive {
		t.Fatalf("store state %s", rec.State)
	}
}

// A malformed request gets a reply that says why, and changes nothing.
func TestControlBadRequest(t *testing.T) {
	e := testenv.New(t)
	st := store.NewMemory()
	e.StartMember(testenv.FastConfig("n1"), st)
	m, err := e.NC.Request(e.Subj.NodeCtl("n1"), []byte(`{"op":"set_state","state":"on-fire"}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(m.Data); got == "" || !errors.Is(errFromReply(m.Data), bus.ErrControl) {
		t.Fatalf("reply %s", got)
	}
	if rec, _ := st.Node(context.Background(), "n1"); rec.State != store.StateActive {
		t.Fatalf("state %s after a bad request", rec.State)
	}
}

// errFromReply reads a control reply as RequestControl does.
func errFromReply(b []byte) error {
	var r struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	if !r.OK && r.Error != "" {
		return fmt.Errorf("%w: %s", bus.ErrControl, r.Error)
	}
	return nil
}
