package appsdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testutil"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/appsdk"
	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// newClient returns a Client on nc, closed when the test ends.
func newClient(t *testing.T, nc *nats.Conn, opts ...appsdk.Option) *appsdk.Client {
	t.Helper()
	opts = append([]appsdk.Option{appsdk.WithLogger(testenv.Log())}, opts...)
	c, err := appsdk.New(nc, opts...)
	if err != nil {
		t.Fatalf("appsdk.New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func service(t *testing.T, c *appsdk.Client, name string) *appsdk.Service {
	t.Helper()
	s, err := c.Service(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// device starts a simulated device and returns once NATS routes pushes to
// it. testenv.Device returns at the welcome frame, but the node sends the
// welcome without waiting for NATS to confirm its subscriptions to the
// device's subjects, so a device, group or service push right after it can
// meet "no responders". The node publishes the connected event after
// subscribing, on the same NATS connection: once the event arrives, NATS
// has the subscriptions.
func device(t *testing.T, e *testenv.Env, cfg simulator.DeviceConfig, id string) (*simulator.Device, protocol.Frame) {
	t.Helper()
	sub, err := e.NC.SubscribeSync(e.Subj.Events(cfg.Service))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := e.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	d, w := e.Device(cfg, id)
	for {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no connected event for %s: %v", w.Conn, err)
		}
		var ev bus.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type == bus.EventConnected && ev.Conn == w.Conn {
			return d, w
		}
	}
}

// recorder is a device push handler that records payloads and answers
// with a result and data.
type recorder struct {
	mu     sync.Mutex
	got    []string
	result string
	data   []byte
}

func (r *recorder) handle(p simulator.Push) (string, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, string(p.Data))
	return r.result, r.data
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return ""
	}
	return r.got[len(r.got)-1]
}

func TestPushTargets(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))
	c := newClient(t, e.NC)
	vac := service(t, c, "vacuum")
	ctx := context.Background()

	recs := map[string]*recorder{}
	welcomes := map[string]protocol.Frame{}
	for i, dev := range []string{"vac-1", "vac-2", "vac-3"} {
		url := n1.URL()
		if i == 2 {
			url = n2.URL()
		}
		rec := &recorder{result: "done-" + dev, data: []byte(`{"battery":80}`)}
		tok := e.Token("vacuum", dev, token.IssueOptions{Groups: []string{"floor-1"}})
		_, w := device(t, e, simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{url}, OnPush: rec.handle}, dev)
		recs[dev], welcomes[dev] = rec, w
	}

	t.Run("conn", func(t *testing.T) {
		r, err := vac.PushConn(ctx, welcomes["vac-2"].Conn, []byte(`{"cmd":"start"}`), appsdk.WithMsgID("m-1"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != appsdk.StatusAcked || r.Delivered != 1 || r.Acked != 1 || r.MsgID != "m-1" || r.Result() != "done-vac-2" {
			t.Fatalf("receipt = %+v", r)
		}
		a := r.Acks[0]
		if a.Conn != welcomes["vac-2"].Conn || a.Device != "vac-2" || a.Node != "n1" || string(a.Data) != `{"battery":80}` {
			t.Fatalf("ack = %+v", a)
		}
		if !slices.Equal(r.Nodes, []string{"n1"}) || r.Results["done-vac-2"] != 1 || r.Latency <= 0 {
			t.Fatalf("receipt = %+v", r)
		}
		if got := recs["vac-2"].last(); got != `{"cmd":"start"}` {
			t.Fatalf("device got %q", got)
		}
	})
	t.Run("binary conn", func(t *testing.T) {
		raw := []byte{0, 1, 2, 0xff}
		r, err := vac.PushConn(ctx, welcomes["vac-1"].Conn, raw)
		if err != nil || r.Status != appsdk.StatusAcked {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
		if got := recs["vac-1"].last(); got != string(raw) {
			t.Fatalf("device got %q, want %q", got, raw)
		}
	})
	for _, waitAll := range []bool{false, true} {
		t.Run(fmt.Sprintf("device waitAll=%v", waitAll), func(t *testing.T) {
			var opts []appsdk.PushOption
			if waitAll {
				opts = append(opts, appsdk.WaitAll())
			}
			r, err := vac.PushDevice(ctx, "vac-3", []byte(`"hello"`), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != appsdk.StatusAcked || r.Delivered != 1 || r.Acked != 1 || r.Result() != "done-vac-3" ||
				!slices.Equal(r.Nodes, []string{"n2"}) || r.Acks[0].Node != "n2" || string(r.Acks[0].Data) != `{"battery":80}` {
				t.Fatalf("receipt = %+v", r)
			}
			if got := recs["vac-3"].last(); got != `"hello"` {
				t.Fatalf("device got %q", got)
			}
		})
	}
	check := func(t *testing.T, r appsdk.Receipt, payload string) {
		t.Helper()
		want := map[string]int{"done-vac-1": 1, "done-vac-2": 1, "done-vac-3": 1}
		if r.Status != appsdk.StatusAcked || r.Delivered != 3 || r.Acked != 3 || !reflect.DeepEqual(r.Results, want) ||
			!slices.Equal(r.Nodes, []string{"n1", "n2"}) || len(r.Acks) != 0 || r.Result() != "" {
			t.Fatalf("receipt = %+v", r)
		}
		for dev, rec := range recs {
			if got := rec.last(); got != payload {
				t.Fatalf("%s got %q, want %q", dev, got, payload)
			}
		}
	}
	t.Run("group", func(t *testing.T) {
		r, err := vac.PushGroup(ctx, "floor-1", []byte(`{"g":1}`))
		if err != nil {
			t.Fatal(err)
		}
		check(t, r, `{"g":1}`)
	})
	t.Run("all", func(t *testing.T) {
		r, err := vac.PushAll(ctx, []byte(`{"all":1}`), appsdk.WithMsgID("all-1"))
		if err != nil {
			t.Fatal(err)
		}
		check(t, r, `{"all":1}`)
		if r.MsgID != "all-1" {
			t.Fatalf("msg id = %q", r.MsgID)
		}
	})
	t.Run("all no ack", func(t *testing.T) {
		r, err := vac.PushAll(ctx, []byte(`2`), appsdk.NoAck())
		if err != nil || r.Status != appsdk.StatusSent || r.Delivered != 3 || r.Acked != 0 || len(r.Nodes) != 2 {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
	})
	t.Run("receipt JSON", func(t *testing.T) {
		r, err := vac.PushConn(ctx, welcomes["vac-1"].Conn, []byte(`1`), appsdk.WithMsgID("j-1"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"status", "msg_id", "delivered", "acked", "results", "acks", "nodes", "latency_ms"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("%s lacks %q", b, k)
			}
		}
		// latency_ms keeps the microsecond, no more.
		var back appsdk.Receipt
		r.Latency = r.Latency.Round(time.Microsecond)
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, r)
		}
	})
}

func TestOfflineFast(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	_, _ = device(t, e, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}}, "vac-1")
	c := newClient(t, e.NC)
	vac, tv := service(t, c, "vacuum"), service(t, c, "tv")
	const timeout = 30 * time.Second

	for _, tc := range []struct {
		name      string
		push      func(ctx context.Context) (appsdk.Receipt, error)
		wantNodes []string
	}{
		{"unknown conn on a live node", func(ctx context.Context) (appsdk.Receipt, error) {
			return vac.PushConn(ctx, "n1.nosuchconn", []byte(`1`))
		}, []string{"n1"}},
		{"conn on an unknown node", func(ctx context.Context) (appsdk.Receipt, error) {
			return vac.PushConn(ctx, "n9.abc", []byte(`1`))
		}, nil},
		{"unknown device", func(ctx context.Context) (appsdk.Receipt, error) {
			return vac.PushDevice(ctx, "vac-404", []byte(`1`))
		}, nil},
		{"unknown device, wait all", func(ctx context.Context) (appsdk.Receipt, error) {
			return vac.PushDevice(ctx, "vac-404", []byte(`1`), appsdk.WaitAll())
		}, nil},
		{"unknown group", func(ctx context.Context) (appsdk.Receipt, error) {
			return vac.PushGroup(ctx, "nobody", []byte(`1`))
		}, nil},
		{"service without connections", func(ctx context.Context) (appsdk.Receipt, error) {
			return tv.PushAll(ctx, []byte(`1`))
		}, nil},
		{"no ack to nobody", func(ctx context.Context) (appsdk.Receipt, error) {
			return vac.PushDevice(ctx, "vac-404", []byte(`1`), appsdk.NoAck())
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			r, err := tc.push(ctx)
			took := time.Since(start)
			if err != nil || r.Status != appsdk.StatusOffline || r.Delivered != 0 || !slices.Equal(r.Nodes, tc.wantNodes) {
				t.Fatalf("receipt = %+v, %v", r, err)
			}
			if took > timeout/3 {
				t.Fatalf("offline answer took %v: it waited for the timeout", took)
			}
		})
	}
}

func TestTimeoutNoAckMsgIDTooLarge(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	// The device that never acks blocks its reader, so it answers no
	// pings either: n2 must not close it for that during the test.
	cfg := testenv.FastConfig("n2")
	cfg.PingTimeout = time.Minute
	n2 := e.StartNode(cfg)
	block := make(chan struct{})
	// A device that never acks, alone on n2; one that acks, on n1.
	_, stuck := device(t, e, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n2.URL()}, OnPush: func(simulator.Push) (string, []byte) {
		<-block
		return "", nil
	}}, "stuck")
	t.Cleanup(func() { close(block) }) // before the device's own cleanup
	_, ok := device(t, e, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}}, "ok")
	c := newClient(t, e.NC)
	vac := service(t, c, "vacuum")
	ctx := context.Background()

	// roughly checks that a timeout receipt came after about want.
	roughly := func(t *testing.T, took, want time.Duration) {
		t.Helper()
		// Never much before; and no waiting far past it (loose: a busy
		// machine is slow).
		if took < want*3/4 || took > want+15*time.Second {
			t.Fatalf("timeout receipt after %v, want about %v", took, want)
		}
	}
	t.Run("conn, WithTimeout", func(t *testing.T) {
		start := time.Now()
		r, err := vac.PushConn(ctx, stuck.Conn, []byte(`1`), appsdk.WithTimeout(600*time.Millisecond))
		if err != nil || r.Status != appsdk.StatusTimeout || r.Acked != 0 {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
		roughly(t, time.Since(start), 600*time.Millisecond)
	})
	t.Run("device, ctx deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		r, err := vac.PushDevice(ctx, "stuck", []byte(`1`))
		if err != nil || r.Status != appsdk.StatusTimeout || r.Delivered != 1 || r.Acked != 0 || !slices.Equal(r.Nodes, []string{"n2"}) {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
		roughly(t, time.Since(start), 500*time.Millisecond)
	})
	t.Run("default timeout", func(t *testing.T) {
		c := newClient(t, e.NC, appsdk.WithDefaultTimeout(400*time.Millisecond))
		start := time.Now()
		r, err := service(t, c, "vacuum").PushGroup(ctx, "nope", []byte(`1`))
		if err != nil || r.Status != appsdk.StatusOffline {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
		r, err = service(t, c, "vacuum").PushAll(ctx, []byte(`1`))
		// ok acks, stuck does not. (n2's final reply may or may not beat the
		// deadline: n2 counts as delivered 1 either way.)
		if err != nil || r.Status != appsdk.StatusPartial || r.Delivered != 2 || r.Acked != 1 || !slices.Equal(r.Nodes, []string{"n1", "n2"}) {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
		roughly(t, time.Since(start), 400*time.Millisecond)
	})
	t.Run("WithTimeout beyond the default timeout", func(t *testing.T) {
		c := newClient(t, e.NC, appsdk.WithDefaultTimeout(100*time.Millisecond))
		start := time.Now()
		r, err := service(t, c, "vacuum").PushConn(ctx, stuck.Conn, []byte(`1`), appsdk.WithTimeout(700*time.Millisecond))
		if err != nil || r.Status != appsdk.StatusTimeout {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
		roughly(t, time.Since(start), 700*time.Millisecond)
	})
	t.Run("ctx deadline before WithTimeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		r, err := vac.PushConn(ctx, stuck.Conn, []byte(`1`), appsdk.WithTimeout(time.Minute))
		if err != nil || r.Status != appsdk.StatusTimeout {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
		roughly(t, time.Since(start), 300*time.Millisecond)
	})
	t.Run("no ack", func(t *testing.T) {
		for _, conn := range []string{stuck.Conn, ok.Conn} {
			r, err := vac.PushConn(ctx, conn, []byte(`1`), appsdk.NoAck(), appsdk.WithMsgID("na-1"))
			if err != nil || r.Status != appsdk.StatusSent || r.Delivered != 1 || r.MsgID != "na-1" {
				t.Fatalf("receipt = %+v, %v", r, err)
			}
		}
	})
	t.Run("msg id", func(t *testing.T) {
		r, err := vac.PushDevice(ctx, "ok", []byte(`1`), appsdk.WithMsgID("order-42"))
		if err != nil || r.Status != appsdk.StatusAcked || r.MsgID != "order-42" {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		r, err := vac.PushConn(ctx, ok.Conn, make([]byte, 300<<10))
		if err != nil || r.Status != appsdk.StatusRejected || r.Error != bus.ErrCodeTooLarge || !slices.Equal(r.Nodes, []string{"n1"}) {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
		r, err = vac.PushAll(ctx, make([]byte, 300<<10))
		if err != nil || r.Status != appsdk.StatusRejected || r.Error != bus.ErrCodeTooLarge {
			t.Fatalf("receipt = %+v, %v", r, err)
		}
	})
	t.Run("over NATS max payload", func(t *testing.T) {
		_, err := vac.PushConn(ctx, ok.Conn, make([]byte, e.NC.MaxPayload()+1))
		if !errors.Is(err, appsdk.ErrPayloadTooLarge) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := vac.PushConn(cctx, ok.Conn, []byte(`1`)); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		// Cancelled while waiting, with nothing back yet.
		cctx, cancel = context.WithCancel(ctx)
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		if _, err := vac.PushConn(cctx, stuck.Conn, []byte(`1`)); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
			t.Fatalf("err = %v after %v", err, time.Since(start))
		}
	})
	if n := appsdk.Pending(c); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

func TestUpstreamQueueGroup(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))

	type got struct {
		replica int
		m       appsdk.Upstream
	}
	ch := make(chan got, 100)
	var subs []*appsdk.Subscription
	for i := range 2 {
		// Two replicas of the app, each with its own connection.
		c := newClient(t, natstest.Connect(t, e.NATS))
		var opts []appsdk.HandlerOption
		if i == 1 {
			opts = append(opts, appsdk.WithConcurrency(4))
		}
		sub, err := service(t, c, "vacuum").HandleUpstream("vacuum-app", func(ctx context.Context, m appsdk.Upstream) {
			if ctx.Err() != nil {
				t.Errorf("handler context done: %v", ctx.Err())
			}
			ch <- got{i, m}
		}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	tok := e.Token("vacuum", "vac-7", token.IssueOptions{Tier: "paid"})
	d, w := device(t, e, simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n1.URL()}}, "vac-7")

	const n = 60
	start := time.Now()
	for i := range n {
		if err := d.Send(fmt.Sprintf("u-%d", i), fmt.Appendf(nil, `{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	perReplica := [2]int{}
	for len(seen) < n {
		select {
		case g := <-ch:
			m := g.m
			if seen[m.MsgID] {
				t.Fatalf("message %s handled twice", m.MsgID)
			}
			seen[m.MsgID] = true
			perReplica[g.replica]++
			var i int
			if _, err := fmt.Sscanf(m.MsgID, "u-%d", &i); err != nil || string(m.Data) != fmt.Sprintf(`{"i":%d}`, i) {
				t.Fatalf("message %s data %q", m.MsgID, m.Data)
			}
			if m.Service != "vacuum" || m.Device != "vac-7" || m.Conn != w.Conn || m.Node != "n1" || m.Tier != "paid" ||
				m.Received.Before(start) {
				t.Fatalf("upstream = %+v", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of %d upstream messages", len(seen), n)
		}
	}
	if perReplica[0] == 0 || perReplica[1] == 0 {
		t.Fatalf("queue group did not share: %v", perReplica)
	}
	for _, s := range subs {
		if err := s.Drain(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("drained subscription not done")
		}
	}
	select {
	case g := <-ch:
		t.Fatalf("extra message %+v", g)
	default:
	}
}

func TestUnsubscribeWhileHandling(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	c := newClient(t, e.NC)
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprintf("concurrency %d", workers), func(t *testing.T) {
			entered := make(chan struct{}, 1)
			sawCancel := make(chan struct{})
			sub, err := service(t, c, "vacuum").HandleUpstream("", func(ctx context.Context, m appsdk.Upstream) {
				entered <- struct{}{}
				<-ctx.Done() // held until Unsubscribe
				close(sawCancel)
			}, appsdk.WithConcurrency(workers))
			if err != nil {
				t.Fatal(err)
			}
			d, _ := device(t, e, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}}, fmt.Sprintf("vac-%d", workers))
			if err := d.Send("", []byte(`1`)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Fatal("handler not called")
			}
			if err := sub.Unsubscribe(); err != nil {
				t.Fatal(err)
			}
			for _, ch := range []<-chan struct{}{sawCancel, sub.Done()} {
				select {
				case <-ch:
				case <-time.After(5 * time.Second):
					t.Fatal("handler context not cancelled, or subscription not done")
				}
			}
			if err := sub.Unsubscribe(); err != nil {
				t.Fatalf("second Unsubscribe: %v", err)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	c := newClient(t, e.NC)
	events := make(chan appsdk.Event, 16)
	if _, err := service(t, c, "vacuum").HandleEvents(func(ev appsdk.Event) { events <- ev }); err != nil {
		t.Fatal(err)
	}
	all := make(chan appsdk.Event, 16)
	if _, err := c.HandleAllEvents(func(ev appsdk.Event) { all <- ev }, appsdk.WithQueue("ops")); err != nil {
		t.Fatal(err)
	}
	next := func(ch chan appsdk.Event) appsdk.Event {
		t.Helper()
		select {
		case ev := <-ch:
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
		return appsdk.Event{}
	}

	tok := e.Token("vacuum", "vac-1", token.IssueOptions{Tier: "free", Groups: []string{"g1"}})
	d, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n1.URL()}}, "vac-1")
	ev := next(events)
	if ev.Type != appsdk.EventConnected || ev.Service != "vacuum" || ev.Device != "vac-1" || ev.Conn != w.Conn ||
		ev.Node != "n1" || ev.Tier != "free" || !slices.Equal(ev.Groups, []string{"g1"}) || ev.At.IsZero() {
		t.Fatalf("connected = %+v", ev)
	}
	d.Close()
	ev = next(events)
	if ev.Type != appsdk.EventDisconnected || ev.Conn != w.Conn || ev.Reason != "client_closed" || ev.Code != 1000 || ev.Since.IsZero() {
		t.Fatalf("disconnected = %+v", ev)
	}

	_, tvw := e.Device(simulator.DeviceConfig{Service: "tv", Nodes: []string{n1.URL()}}, "tv-1")
	for {
		ev := next(all)
		if ev.Service == "tv" {
			if ev.Type != appsdk.EventConnected || ev.Conn != tvw.Conn {
				t.Fatalf("tv event = %+v", ev)
			}
			break
		}
	}
}

func TestIssueToken(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	c := newClient(t, e.NC, appsdk.WithKeys(e.Keys))
	vac := service(t, c, "vacuum")

	tok, err := vac.IssueToken("vac-9", appsdk.WithTier("paid"), appsdk.WithGroups("floor-2", "lobby"), appsdk.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := e.Keys.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Service != "vacuum" || claims.Device() != "vac-9" || claims.Tier != "paid" || !slices.Equal(claims.Groups, []string{"floor-2", "lobby"}) ||
		time.Until(claims.ExpiresAt.Time) > time.Hour || time.Until(claims.ExpiresAt.Time) < 59*time.Minute {
		t.Fatalf("claims = %+v", claims)
	}
	// A node accepts it.
	_, w := device(t, e, simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n1.URL()}}, "vac-9")
	if w.Device != "vac-9" || w.Tier != "paid" || !slices.Equal(w.Groups, []string{"floor-2", "lobby"}) {
		t.Fatalf("welcome = %+v", w)
	}
	r, err := vac.PushGroup(context.Background(), "lobby", []byte(`1`))
	if err != nil || r.Status != appsdk.StatusAcked || r.Acked != 1 {
		t.Fatalf("receipt = %+v, %v", r, err)
	}

	for _, tc := range []struct {
		name   string
		device string
		opts   []appsdk.TokenOption
		want   error
	}{
		{"bad device", "vac 9", nil, appsdk.ErrBadName},
		{"bad tier", "vac-9", []appsdk.TokenOption{appsdk.WithTier("gold.plus")}, appsdk.ErrBadOption},
		{"empty tier", "vac-9", []appsdk.TokenOption{appsdk.WithTier("")}, appsdk.ErrBadName},
		{"bad group", "vac-9", []appsdk.TokenOption{appsdk.WithGroups("ok", "a>b")}, appsdk.ErrBadName},
		{"zero ttl", "vac-9", []appsdk.TokenOption{appsdk.WithTTL(0)}, appsdk.ErrBadOption},
		{"negative ttl", "vac-9", []appsdk.TokenOption{appsdk.WithTTL(-time.Second)}, appsdk.ErrBadOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tok, err := vac.IssueToken(tc.device, tc.opts...); !errors.Is(err, tc.want) || tok != "" {
				t.Fatalf("IssueToken = %q, %v; want %v", tok, err, tc.want)
			}
		})
	}
	t.Run("service without a key", func(t *testing.T) {
		if _, err := service(t, c, "fridge").IssueToken("f-1"); !errors.Is(err, token.ErrNoSigner) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("client without keys", func(t *testing.T) {
		c := newClient(t, e.NC)
		if _, err := service(t, c, "vacuum").IssueToken("vac-1"); !errors.Is(err, appsdk.ErrNoKeys) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestBadArguments(t *testing.T) {
	e := testenv.New(t)
	for _, tc := range []struct {
		name string
		opt  appsdk.Option
	}{
		{"prefix with a space", appsdk.WithPrefix("a b")},
		{"empty prefix", appsdk.WithPrefix("")},
		{"prefix with a wildcard", appsdk.WithPrefix("t.*")},
		{"nil keys", appsdk.WithKeys(nil)},
		{"zero timeout", appsdk.WithDefaultTimeout(0)},
		{"negative settle", appsdk.WithSettle(-time.Millisecond)},
		{"inbox wildcard", appsdk.WithInboxPrefix("_INBOX.>")},
		{"inbox empty token", appsdk.WithInboxPrefix("a..b")},
		{"nil logger", appsdk.WithLogger(nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := appsdk.New(e.NC, tc.opt); !errors.Is(err, appsdk.ErrBadOption) || c != nil {
				t.Fatalf("New = %v, %v", c, err)
			}
		})
	}
	if _, err := appsdk.New(nil); !errors.Is(err, appsdk.ErrBadOption) {
		t.Fatalf("New(nil) = %v", err)
	}

	c := newClient(t, e.NC)
	if _, err := c.Service("vac.uum"); !errors.Is(err, appsdk.ErrBadName) {
		t.Fatalf("Service = %v", err)
	}
	vac := service(t, c, "vacuum")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		push func() (appsdk.Receipt, error)
		want error
	}{
		{"conn ID without node", func() (appsdk.Receipt, error) { return vac.PushConn(ctx, "abc", nil) }, appsdk.ErrBadConnID},
		{"conn ID wildcard", func() (appsdk.Receipt, error) { return vac.PushConn(ctx, "n1.*", nil) }, appsdk.ErrBadConnID},
		{"conn ID too many tokens", func() (appsdk.Receipt, error) { return vac.PushConn(ctx, "n1.a.b", nil) }, appsdk.ErrBadConnID},
		{"device", func() (appsdk.Receipt, error) { return vac.PushDevice(ctx, "a.>", nil) }, appsdk.ErrBadName},
		{"group", func() (appsdk.Receipt, error) { return vac.PushGroup(ctx, "", nil) }, appsdk.ErrBadName},
		{"timeout", func() (appsdk.Receipt, error) { return vac.PushAll(ctx, nil, appsdk.WithTimeout(0)) }, appsdk.ErrBadOption},
		{"msg id", func() (appsdk.Receipt, error) { return vac.PushAll(ctx, nil, appsdk.WithMsgID("a\r\nb")) }, appsdk.ErrBadOption},
		{"long msg id", func() (appsdk.Receipt, error) {
			return vac.PushAll(ctx, nil, appsdk.WithMsgID(strings.Repeat("x", appsdk.MaxMsgIDLen+1)))
		}, appsdk.ErrBadOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := tc.push(); !errors.Is(err, tc.want) {
				t.Fatalf("push = %+v, %v; want %v", r, err, tc.want)
			}
		})
	}
	if _, err := vac.HandleUpstream("app", nil); !errors.Is(err, appsdk.ErrNilHandler) {
		t.Fatalf("HandleUpstream(nil) = %v", err)
	}
	if _, err := vac.HandleUpstream("a b", func(context.Context, appsdk.Upstream) {}); !errors.Is(err, appsdk.ErrBadName) {
		t.Fatalf("HandleUpstream(bad queue) = %v", err)
	}
	if _, err := vac.HandleEvents(func(appsdk.Event) {}, appsdk.WithConcurrency(0)); !errors.Is(err, appsdk.ErrBadOption) {
		t.Fatalf("HandleEvents(concurrency 0) = %v", err)
	}
}

func TestClose(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	block := make(chan struct{})
	_, w := device(t, e, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}, OnPush: func(simulator.Push) (string, []byte) {
		<-block
		return "", nil
	}}, "stuck")
	t.Cleanup(func() { close(block) })

	nc := natstest.Connect(t, e.NATS)
	base := nc.NumSubscriptions()
	c := newClient(t, nc)
	vac := service(t, c, "vacuum")
	sub, err := vac.HandleEvents(func(appsdk.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := vac.PushConn(context.Background(), w.Conn, []byte(`1`))
		errc <- err
	}()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if appsdk.Pending(c) != 1 {
			return errors.New("push not waiting yet")
		}
		return nil
	})
	c.Close()
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, appsdk.ErrClosed) {
			t.Fatalf("push in flight: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("push in flight did not return on Close")
	}
	select {
	case <-sub.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("subscription not done after Close")
	}
	if _, err := vac.PushConn(context.Background(), w.Conn, nil); !errors.Is(err, appsdk.ErrClosed) {
		t.Fatalf("push after Close: %v", err)
	}
	if _, err := vac.HandleEvents(func(appsdk.Event) {}); !errors.Is(err, appsdk.ErrClosed) {
		t.Fatalf("HandleEvents after Close: %v", err)
	}
	if got := nc.NumSubscriptions(); got != base {
		t.Fatalf("%d subscriptions after Close, want %d", got, base)
	}
	if nc.IsClosed() {
		t.Fatal("Close closed a connection it does not own")
	}

	// Connect owns its connection.
	oc, err := appsdk.Connect(context.Background(), bus.Config{URLs: []string{e.NATS.ClientURL()}}, appsdk.WithLogger(testenv.Log()))
	if err != nil {
		t.Fatal(err)
	}
	r, err := service(t, oc, "vacuum").PushDevice(context.Background(), "nobody", nil)
	if err != nil || r.Status != appsdk.StatusOffline {
		t.Fatalf("receipt = %+v, %v", r, err)
	}
	oc.Close()
	if !oc.Conn().IsClosed() {
		t.Fatal("Close did not close the connection Connect made")
	}
}

func TestConnClosed(t *testing.T) {
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.PingTimeout = time.Minute
	n1 := e.StartNode(cfg)
	block := make(chan struct{})
	_, w := device(t, e, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}, OnPush: func(simulator.Push) (string, []byte) {
		<-block
		return "", nil
	}}, "stuck")
	t.Cleanup(func() { close(block) })

	nc := natstest.Connect(t, e.NATS)
	c := newClient(t, nc)
	vac := service(t, c, "vacuum")
	errc := make(chan error, 1)
	go func() {
		_, err := vac.PushDevice(context.Background(), "stuck", []byte(`1`), appsdk.WithTimeout(time.Minute))
		errc <- err
	}()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if appsdk.Pending(c) != 1 {
			return errors.New("push not waiting yet")
		}
		return nil
	})
	nc.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, appsdk.ErrConnClosed) {
			t.Fatalf("push in flight: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("push in flight did not return when NATS closed")
	}
	if _, err := vac.PushConn(context.Background(), w.Conn, []byte(`1`)); !errors.Is(err, appsdk.ErrConnClosed) {
		t.Fatalf("push on a closed connection: %v", err)
	}
	if _, err := appsdk.New(nc); !errors.Is(err, appsdk.ErrConnClosed) {
		t.Fatalf("New on a closed connection: %v", err)
	}
}

func TestConcurrentPushes(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))
	var conns []string
	for i := range 10 {
		url := n1.URL()
		if i%2 == 1 {
			url = n2.URL()
		}
		_, w := device(t, e, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{url}}, fmt.Sprintf("vac-%d", i))
		conns = append(conns, w.Conn)
	}
	nc := natstest.Connect(t, e.NATS)
	c := newClient(t, nc)
	vac := service(t, c, "vacuum")
	subs := nc.NumSubscriptions()
	// The first push to a service subscribes its inbox, once.
	if r, err := vac.PushConn(context.Background(), conns[0], []byte(`{}`)); err != nil || r.Status != appsdk.StatusAcked {
		t.Fatalf("first push: %+v, %v", r, err)
	}
	if got := nc.NumSubscriptions(); got != subs+1 {
		t.Fatalf("subscriptions: %d before the first push, %d after", subs, got)
	}
	subs++

	const pushes = 200
	var wg sync.WaitGroup
	var acked, maxSubs, maxGoroutines atomic.Int64
	goroutines := runtime.NumGoroutine()
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		// Sample the subscription count while the pushes are in flight.
		defer close(sampled)
		for {
			if n := int64(nc.NumSubscriptions()); n > maxSubs.Load() {
				maxSubs.Store(n)
			}
			if n := int64(runtime.NumGoroutine()); n > maxGoroutines.Load() {
				maxGoroutines.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	errs := make(chan error, pushes)
	for i := range pushes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("p-%d", i)
			r, err := vac.PushConn(context.Background(), conns[i%len(conns)], fmt.Appendf(nil, `{"i":%d}`, i), appsdk.WithMsgID(id))
			switch {
			case err != nil:
				errs <- err
			case r.Status != appsdk.StatusAcked || r.MsgID != id || r.Acks[0].Conn != conns[i%len(conns)]:
				errs <- fmt.Errorf("push %d: %+v", i, r)
			default:
				acked.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if acked.Load() != pushes {
		t.Fatalf("%d of %d pushes acked", acked.Load(), pushes)
	}
	if got := nc.NumSubscriptions(); got != subs || maxSubs.Load() != int64(subs) {
		t.Fatalf("subscriptions: %d before, %d after, at most %d during", subs, got, maxSubs.Load())
	}
	// The pushing goroutines themselves, the sampler, and some slack for
	// the runtime and the nodes: a push starts no goroutine of its own.
	if n := maxGoroutines.Load(); n > int64(goroutines+pushes+1+20) {
		t.Fatalf("%d goroutines during %d pushes, %d before", n, pushes, goroutines)
	}
	if n := appsdk.Pending(c); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

func TestCluster(t *testing.T) {
	servers := natstest.RunCluster(t, 3)
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"), servers[0])
	n2 := e.StartNode(testenv.FastConfig("n2"), servers[1])
	_, w1 := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}, OnPush: (&recorder{result: "r1"}).handle}, "vac-1")
	_, w2 := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n2.URL()}, OnPush: (&recorder{result: "r2"}).handle}, "vac-2")
	c := newClient(t, natstest.Connect(t, servers[2]))
	vac := service(t, c, "vacuum")
	ctx := context.Background()

	// Interest crosses routes with a small delay: retry until it has.
	eventually := func(what string, push func() (appsdk.Receipt, error), ok func(appsdk.Receipt) bool) {
		t.Helper()
		testutil.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			r, err := push()
			if err != nil {
				return err
			}
			if !ok(r) {
				return fmt.Errorf("%s: receipt %+v", what, r)
			}
			return nil
		})
	}
	short := appsdk.WithTimeout(2 * time.Second)
	eventually("conn on n1", func() (appsdk.Receipt, error) { return vac.PushConn(ctx, w1.Conn, []byte(`1`), short) },
		func(r appsdk.Receipt) bool { return r.Status == appsdk.StatusAcked && r.Result() == "r1" })
	eventually("conn on n2", func() (appsdk.Receipt, error) { return vac.PushConn(ctx, w2.Conn, []byte(`2`), short) },
		func(r appsdk.Receipt) bool { return r.Status == appsdk.StatusAcked && r.Result() == "r2" })
	eventually("device on n2", func() (appsdk.Receipt, error) { return vac.PushDevice(ctx, "vac-2", []byte(`3`), short) },
		func(r appsdk.Receipt) bool {
			return r.Status == appsdk.StatusAcked && slices.Equal(r.Nodes, []string{"n2"}) && r.Acks[0].Conn == w2.Conn
		})
	eventually("all", func() (appsdk.Receipt, error) { return vac.PushAll(ctx, []byte(`4`), short) },
		func(r appsdk.Receipt) bool {
			return r.Status == appsdk.StatusAcked && r.Delivered == 2 && r.Acked == 2 && slices.Equal(r.Nodes, []string{"n1", "n2"}) &&
				r.Results["r1"] == 1 && r.Results["r2"] == 1
		})
	// Once interest has spread, pushes work the first time.
	for i := range 20 {
		r, err := vac.PushDevice(ctx, "vac-1", fmt.Appendf(nil, `%d`, i))
		if err != nil || r.Status != appsdk.StatusAcked || r.Result() != "r1" {
			t.Fatalf("push %d: %+v, %v", i, r, err)
		}
	}
	// Unknown targets are offline at once across the cluster too.
	start := time.Now()
	r, err := vac.PushConn(ctx, "n9.abc", []byte(`1`))
	if err != nil || r.Status != appsdk.StatusOffline || time.Since(start) > time.Second {
		t.Fatalf("receipt = %+v, %v after %v", r, err, time.Since(start))
	}
}
