package simulator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testutil"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// push sends a push request and returns the final reply of the one node
// expected to answer.
func push(t *testing.T, nc *nats.Conn, subject string, data []byte, hdr nats.Header) bus.Reply {
	t.Helper()
	svc, _ := bus.MustSubjects("").PushService(subject)
	inbox := bus.InboxPrefix(svc) + "." + nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: inbox, Data: data, Header: hdr}); err != nil {
		t.Fatal(err)
	}
	// The first final reply, unless it says offline: a node that held the
	// target a moment ago answers so at once (docs/subjects.md), and the
	// node that holds it now answers a little later.
	var offline *bus.Reply
	for {
		wait := 5 * time.Second
		if offline != nil {
			wait = time.Second
		}
		m, err := sub.NextMsg(wait)
		if err != nil {
			if offline != nil {
				return *offline
			}
			t.Fatalf("push to %s: %v", subject, err)
		}
		if m.Header.Get("Status") == "503" {
			t.Fatalf("push to %s: no responders", subject)
		}
		var r bus.Reply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("reply %q: %v", m.Data, err)
		}
		if r.Final && r.Status == bus.StatusOffline && offline == nil {
			offline = &r
			continue
		}
		if r.Final {
			return r
		}
	}
}

func TestNewDeviceNeedsTokenAndNodes(t *testing.T) {
	if _, err := simulator.NewDevice(simulator.DeviceConfig{Nodes: []string{"ws://x/ws"}}); err == nil {
		t.Fatal("no token accepted")
	}
	if _, err := simulator.NewDevice(simulator.DeviceConfig{Token: "t"}); err == nil {
		t.Fatal("no nodes accepted")
	}
	d := newDevice(t, simulator.DeviceConfig{Token: "t", Nodes: []string{"ws://x/ws"}})
	if err := d.Send("", []byte(`1`)); !errors.Is(err, simulator.ErrNotConnected) {
		t.Fatalf("Send before Run: %v", err)
	}
	if err := d.SendRaw([]byte(`{}`)); !errors.Is(err, simulator.ErrNotConnected) {
		t.Fatalf("SendRaw before Run: %v", err)
	}
	if _, ok := d.Welcome(); ok {
		t.Fatal("connected before Run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := d.WaitConnected(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConnected = %v", err)
	}
	d.Close() // no connection: nothing to do
}

// TestDevicePushesAndUpstream: a device on a real node gets pushes, acks
// them with its handler's result, and sends upstream messages.
func TestDevicePushesAndUpstream(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	var mu sync.Mutex
	var got []simulator.Push
	var acked []protocol.Frame
	for _, authInFrame := range []bool{false, true} {
		t.Run(fmt.Sprintf("auth in frame %v", authInFrame), func(t *testing.T) {
			dev := fmt.Sprintf("vac-%v", authInFrame)
			d := newDevice(t, simulator.DeviceConfig{
				Service: "vacuum", Token: e.Token("vacuum", dev, token.IssueOptions{Tier: "paid", Groups: []string{"floor-" + dev}}),
				Nodes: []string{n1.URL()}, AuthInFrame: authInFrame,
				OnPush: func(p simulator.Push) (string, []byte) {
					mu.Lock()
					got = append(got, p)
					mu.Unlock()
					if string(p.Data) == `"busy?"` {
						return "busy", []byte(`{"battery":80}`)
					}
					return "", nil
				},
				OnFrame: func(f protocol.Frame) {
					mu.Lock()
					acked = append(acked, f)
					mu.Unlock()
				},
			})
			run(t, d)
			w := waitConnected(t, d)
			if w.Node != "n1" || w.Device != dev || w.Service != "vacuum" || w.Tier != "paid" || len(w.Groups) != 1 || !strings.HasPrefix(w.Conn, "n1.") {
				t.Fatalf("welcome = %+v", w)
			}
			mu.Lock()
			got, acked = nil, nil
			mu.Unlock()

			r := push(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`"busy?"`), nats.Header{bus.HeaderMsgID: {"m-1"}})
			if r.Status != bus.StatusAcked || r.Results["busy"] != 1 || len(r.Acks) != 1 || string(r.Acks[0].Data) != `{"battery":80}` || r.MsgID != "m-1" {
				t.Fatalf("reply = %+v", r)
			}
			r = push(t, e.NC, e.Subj.Device("vacuum", dev), []byte{0xde, 0xad}, nil)
			if r.Status != bus.StatusAcked || r.Results["ok"] != 1 {
				t.Fatalf("binary push reply = %+v", r)
			}
			r = push(t, e.NC, e.Subj.Group("vacuum", "floor-"+dev), nil, nats.Header{bus.HeaderAck: {bus.AckNone}})
			if r.Status != bus.StatusSent || r.Delivered != 1 {
				t.Fatalf("no-ack push reply = %+v", r)
			}
			testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
				if s := d.Stats(); s.Pushes != 3 || s.Acks != 2 {
					return fmt.Errorf("stats %+v", s)
				}
				return nil
			})
			mu.Lock()
			ps := append([]simulator.Push(nil), got...)
			mu.Unlock()
			if len(ps) != 3 || ps[0].MsgID != "m-1" || string(ps[0].Data) != `"busy?"` || ps[0].NoAck || ps[0].ID == "" ||
				!bytes.Equal(ps[1].Data, []byte{0xde, 0xad}) || !ps[2].NoAck || ps[2].Data != nil || ps[0].Received.IsZero() {
				t.Fatalf("pushes = %+v", ps)
			}

			// Upstream: JSON as is, bytes decoded, nothing as an empty
			// body; the node acks those with an id.
			up, err := e.NC.SubscribeSync(e.Subj.Upstream("vacuum"))
			if err != nil {
				t.Fatal(err)
			}
			defer up.Unsubscribe()
			if err := e.NC.Flush(); err != nil {
				t.Fatal(err)
			}
			bodies := [][]byte{[]byte(`{"temp":21.5}`), {0xff, 0x00}, nil, []byte("{\"name\":\"caf\xe9\"}")}
			for i, b := range bodies {
				if err := d.Send(fmt.Sprintf("u-%d", i), b); err != nil {
					t.Fatal(err)
				}
			}
			for i, want := range bodies {
				m, err := up.NextMsg(5 * time.Second)
				if err != nil {
					t.Fatalf("upstream %d: %v", i, err)
				}
				if !bytes.Equal(m.Data, want) || m.Header.Get(bus.HeaderDevice) != dev || m.Header.Get(bus.HeaderMsgID) != fmt.Sprintf("u-%d", i) {
					t.Fatalf("upstream %d = %q %v, want %q", i, m.Data, m.Header, want)
				}
			}
			testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
				mu.Lock()
				defer mu.Unlock()
				if len(acked) != len(bodies) {
					return fmt.Errorf("frames %+v", acked)
				}
				for i, f := range acked {
					if f.Type != protocol.TypeAck || f.ID != fmt.Sprintf("u-%d", i) {
						return fmt.Errorf("frame %d = %+v", i, f)
					}
				}
				return nil
			})
			// A message over the welcome's max_frame is refused before it
			// goes out (the node would close the connection with 1009).
			w, _ = d.Welcome()
			if err := d.Send("big", bytes.Repeat([]byte("x"), w.MaxFrame)); !errors.Is(err, simulator.ErrTooLarge) {
				t.Fatalf("Send over max_frame %d: %v", w.MaxFrame, err)
			}
			// Nothing above broke the connection (a frame the node finds
			// invalid, such as non-UTF-8 text, would have).
			if s := d.Stats(); s.Connects != 1 || s.Sent != int64(len(bodies)) {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestDeviceReconnectsAfterDrop: the socket ends without a close frame; the
// device reconnects at once.
func TestDeviceReconnectsAfterDrop(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	p := newProxy(t, n1.Addr().String())
	closes := make(chan protocol.CloseCode, 4)
	d := newDevice(t, simulator.DeviceConfig{
		Service: "vacuum", Token: e.Token("vacuum", "vac-1", token.IssueOptions{}), Nodes: []string{p.url()},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnClose: func(code protocol.CloseCode, _ string) { closes <- code },
	})
	run(t, d)
	w1 := waitConnected(t, d)
	p.dropAll()
	select {
	case code := <-closes:
		if code != 1006 {
			t.Fatalf("close code %d, want 1006", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the drop went unnoticed")
	}
	var w2 protocol.Frame
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		var ok bool
		if w2, ok = d.Welcome(); !ok || w2.Conn == w1.Conn {
			return fmt.Errorf("not reconnected (%+v)", d.Stats())
		}
		return nil
	})
	if s := d.Stats(); s.Connects != 2 || s.Reconnects != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The new connection works.
	if r := push(t, e.NC, e.Subj.Conn("vacuum", w2.Conn), []byte(`1`), nil); r.Status != bus.StatusAcked {
		t.Fatalf("push after reconnect: %+v", r)
	}
}

// TestDeviceDetectsDeadNode pins a fix: a device watched nothing once
// welcomed, so a connection that went silent without ending (node host
// gone, network path broken) kept it waiting forever. It must give up after
// 2 × ping_ms without a frame or a ping and reconnect.
func TestDeviceDetectsDeadNode(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1")) // ping_ms 1000
	p := newProxy(t, n1.Addr().String())
	d := newDevice(t, simulator.DeviceConfig{
		Service: "vacuum", Token: e.Token("vacuum", "vac-1", token.IssueOptions{}), Nodes: []string{p.url()},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	run(t, d)
	w1 := waitConnected(t, d)
	if w1.PingMS != 1000 {
		t.Fatalf("ping_ms %d", w1.PingMS)
	}
	p.freezeAll()
	frozen := time.Now()
	testutil.CheckFor(t, 8*time.Second, 10*time.Millisecond, func() error {
		if w, ok := d.Welcome(); !ok || w.Conn == w1.Conn {
			return fmt.Errorf("still on the dead connection (%+v)", d.Stats())
		}
		return nil
	})
	// Not at once: the node was heard from (pings) up to the freeze.
	if el := time.Since(frozen); el < 500*time.Millisecond {
		t.Fatalf("gave up on the node after %v", el)
	}
}

// TestDeviceMovesOnShutdown: a node shutting down sends a reconnect frame;
// the device moves to the other node of its list.
func TestDeviceMovesOnShutdown(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))
	d := newDevice(t, simulator.DeviceConfig{
		Service: "vacuum", Token: e.Token("vacuum", "vac-1", token.IssueOptions{}), Nodes: []string{n1.URL(), n2.URL()},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	errc := run(t, d)
	if w := waitConnected(t, d); w.Node != "n1" {
		t.Fatalf("on %s, want n1 (first of the list)", w.Node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w, ok := d.Welcome(); !ok || w.Node != "n2" {
			return fmt.Errorf("not on n2 (%+v)", w)
		}
		return nil
	})
	if r := push(t, e.NC, e.Subj.Device("vacuum", "vac-1"), []byte(`1`), nil); r.Status != bus.StatusAcked || r.Node != "n2" {
		t.Fatalf("push after the move: %+v", r)
	}
	if done, err := errc.ended(); done {
		t.Fatalf("Run ended: %v", err)
	}
}

// TestDeviceReconnectFrame: on a reconnect frame the device waits after_ms,
// then moves to another node of its list, even though the node that asked
// is first in the list and still accepts.
func TestDeviceReconnectFrame(t *testing.T) {
	e := testenv.New(t)
	n2 := e.StartNode(testenv.FastConfig("n2"))
	const afterMS = 400
	mover := startMovingNode(t, afterMS)
	d := newDevice(t, simulator.DeviceConfig{
		Service: "vacuum", Token: e.Token("vacuum", "vac-1", token.IssueOptions{}), Nodes: []string{mover.url(), n2.URL()},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	run(t, d)
	var times [2]time.Time
	select {
	case times = <-mover.left:
	case <-time.After(10 * time.Second):
		t.Fatal("the device never left the node that asked it to")
	}
	if waited := times[1].Sub(times[0]); waited < afterMS*time.Millisecond-20*time.Millisecond || waited > afterMS*time.Millisecond+3*time.Second {
		t.Fatalf("left %v after the reconnect frame, want about %dms", waited, afterMS)
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if w, ok := d.Welcome(); !ok || w.Node != "n2" {
			return fmt.Errorf("not on n2 (%+v)", w)
		}
		return nil
	})
	if n := mover.accepts.Load(); n != 1 {
		t.Fatalf("went back to the node that asked it to leave (%d connections)", n)
	}
	if s := d.Stats(); s.Connects != 2 || s.Reconnects != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDeviceTokenExpired: with TokenFunc, a 4002 gets a fresh token and the
// device connects; with a fixed token, it gives up.
func TestDeviceTokenExpired(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	past := testenv.Keys(t)
	past.SetClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	expired, err := past.Issue("vacuum", "vac-1", token.IssueOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}

	var calls atomic.Int32
	closes := make(chan protocol.CloseCode, 8)
	d := newDevice(t, simulator.DeviceConfig{
		Service: "vacuum", Nodes: []string{n1.URL()}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		TokenFunc: func(context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return expired, nil
			}
			return e.Token("vacuum", "vac-1", token.IssueOptions{}), nil
		},
		OnClose: func(code protocol.CloseCode, _ string) { closes <- code },
	})
	run(t, d)
	w := waitConnected(t, d)
	if w.Device != "vac-1" || calls.Load() != 2 {
		t.Fatalf("welcome %+v after %d token calls", w, calls.Load())
	}
	select {
	case code := <-closes:
		if code != protocol.CloseTokenExpired {
			t.Fatalf("first close %d, want 4002", code)
		}
	default:
		t.Fatal("connected without a 4002 close first")
	}

	fixed := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}, Token: expired})
	err = waitErr(t, run(t, fixed), 10*time.Second)
	if !errors.Is(err, simulator.ErrRefused) || !strings.Contains(err.Error(), "token_expired") {
		t.Fatalf("fixed expired token: Run = %v", err)
	}
}

// TestDeviceGivesUp: replaced (4005) and refused (4001, 4003) end Run.
func TestDeviceGivesUp(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))

	t.Run("replaced", func(t *testing.T) {
		tok := e.Token("vacuum", "vac-r", token.IssueOptions{})
		first := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n1.URL()}})
		errc := run(t, first)
		waitConnected(t, first)
		second := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n2.URL()}})
		run(t, second)
		w := waitConnected(t, second)
		if err := waitErr(t, errc, 10*time.Second); !errors.Is(err, simulator.ErrReplaced) {
			t.Fatalf("Run = %v, want ErrReplaced", err)
		}
		if r := push(t, e.NC, e.Subj.Device("vacuum", "vac-r"), []byte(`1`), nil); r.Status != bus.StatusAcked || r.Acks[0].Conn != w.Conn {
			t.Fatalf("push after takeover: %+v", r)
		}
	})

	t.Run("bad token", func(t *testing.T) {
		wrong, err := token.NewKeyring(map[string][]token.Key{"vacuum": {{ID: "vacuum-test", HMACSecret: "not-the-vacuum-secret-0123456789abcdef"}}})
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := wrong.Issue("vacuum", "vac-b", token.IssueOptions{})
		var calls atomic.Int32
		d := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL(), n2.URL()},
			TokenFunc: func(context.Context) (string, error) { calls.Add(1); return tok, nil }})
		err = waitErr(t, run(t, d), 10*time.Second)
		if !errors.Is(err, simulator.ErrRefused) || !strings.Contains(err.Error(), "bad_token") {
			t.Fatalf("Run = %v, want ErrRefused (bad_token)", err)
		}
		if calls.Load() != 1 || d.Stats().Connects != 0 {
			t.Fatalf("%d token calls, stats %+v: it should stop at the first refusal", calls.Load(), d.Stats())
		}
	})

	t.Run("forbidden", func(t *testing.T) {
		d := newDevice(t, simulator.DeviceConfig{Service: "aircon", AuthInFrame: true, Nodes: []string{n1.URL()},
			Token: e.Token("vacuum", "vac-f", token.IssueOptions{})})
		err := waitErr(t, run(t, d), 10*time.Second)
		if !errors.Is(err, simulator.ErrRefused) || !strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("Run = %v, want ErrRefused (forbidden)", err)
		}
	})
}

// closingListener accepts TCP connections and closes them at once, and
// counts them: a node that is there but never answers the handshake.
func closingListener(t *testing.T) (url string, accepts func() int) {
	t.Helper()
	p := newProxy(t, "")
	return p.url(), p.numAccepts
}

// TestBackoffGrows: failed rounds over the node list back off, doubling
// from MinBackoff (with full jitter) up to MaxBackoff.
func TestBackoffGrows(t *testing.T) {
	t.Parallel()
	e := testenv.New(t)
	url, accepts := closingListener(t)
	d := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Token: e.Token("vacuum", "d", token.IssueOptions{}),
		Nodes: []string{url}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Second})
	run(t, d)
	// The first rounds wait at most 5, 10, 20, 40ms: three come quickly.
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := accepts(); n < 3 {
			return fmt.Errorf("%d attempts", n)
		}
		return nil
	})
	// Doubling, twenty rounds need minutes; at a fixed 5ms they would take
	// 100ms.
	time.Sleep(1500 * time.Millisecond) // a measuring window, not a wait for an event
	if n := accepts(); n > 20 {
		t.Fatalf("%d attempts in 1.5s: the backoff does not grow", n)
	}
}

// TestBackoffIsCapped: no round waits longer than MaxBackoff.
func TestBackoffIsCapped(t *testing.T) {
	t.Parallel()
	e := testenv.New(t)
	url, accepts := closingListener(t)
	d := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Token: e.Token("vacuum", "d", token.IssueOptions{}),
		Nodes: []string{url}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	run(t, d)
	// Rounds wait at most 20ms: 25 take well under 2s... unless the
	// backoff keeps doubling (then the 12th alone may wait 10s).
	testutil.CheckFor(t, 3*time.Second, 5*time.Millisecond, func() error {
		if n := accepts(); n < 25 {
			return fmt.Errorf("%d attempts", n)
		}
		return nil
	})
}

// TestBackoffResets: after a connection that worked, the backoff starts
// again from MinBackoff.
func TestBackoffResets(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	p := newProxy(t, n1.Addr().String())
	p.setRefuse(true)
	d := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Token: e.Token("vacuum", "d", token.IssueOptions{}),
		Nodes: []string{p.url()}, MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Second})
	run(t, d)
	// Seven failed rounds: the backoff is up to 1.28s.
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := p.numAccepts(); n < 7 {
			return fmt.Errorf("%d attempts", n)
		}
		return nil
	})
	p.setRefuse(false)
	waitConnected(t, d)

	p.setRefuse(true)
	before := p.numAccepts()
	p.dropAll()
	// Reset: the next rounds wait at most 10 (after a drop), then 10, 20,
	// 40, 80ms: five attempts well within 1.5s. Not reset, they would wait
	// up to 2.56s, 5.12s, 10s, 10s (all under 1.5s: p < 0.002).
	testutil.CheckFor(t, 1500*time.Millisecond, 5*time.Millisecond, func() error {
		if n := p.numAccepts() - before; n < 5 {
			return fmt.Errorf("%d attempts since the drop", n)
		}
		return nil
	})
}

func TestFetchNodes(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	mode := "ok"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		m := mode
		mu.Unlock()
		if r.URL.Path != "/v1/nodes" {
			http.NotFound(w, r)
			return
		}
		switch m {
		case "ok":
			_, _ = fmt.Fprintf(w, `{"service":%q,"tier":"paid","handshakeUrl":["ws://a/ws","ws://b/ws"]}`, r.URL.Query().Get("service"))
		case "404":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":{"code":"unknown_service","message":"no service \"tv\""}}`))
		case "garbage":
			_, _ = w.Write([]byte(`<html>not json`))
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	nr, err := simulator.FetchNodes(ctx, srv.Client(), srv.URL, "vacuum", "vac-0001")
	if err != nil || nr.Service != "vacuum" || nr.Tier != "paid" || len(nr.HandshakeURL) != 2 || nr.HandshakeURL[0] != "ws://a/ws" {
		t.Fatalf("200: %+v, %v", nr, err)
	}
	if _, err := simulator.FetchNodes(ctx, srv.Client(), srv.URL, "", "c 1&x=y"); err != nil {
		t.Fatal(err)
	}
	if _, err := simulator.FetchNodes(ctx, srv.Client(), srv.URL, "tv", ""); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if want := []string{"service=vacuum&client=vac-0001", "client=c+1%26x%3Dy", "service=tv"}; fmt.Sprint(queries) != fmt.Sprint(want) {
		t.Errorf("queries %q, want %q", queries, want)
	}
	mode = "404"
	mu.Unlock()
	_, err = simulator.FetchNodes(ctx, srv.Client(), srv.URL, "tv", "")
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "unknown_service") {
		t.Fatalf("404: %v", err)
	}
	mu.Lock()
	mode = "garbage"
	mu.Unlock()
	if _, err := simulator.FetchNodes(ctx, srv.Client(), srv.URL, "tv", ""); err == nil || !strings.Contains(err.Error(), "directory answer") {
		t.Fatalf("garbage: %v", err)
	}
	srv.Close()
	if _, err := simulator.FetchNodes(ctx, http.DefaultClient, srv.URL, "tv", ""); err == nil {
		t.Fatal("directory down: no error")
	}
	if _, err := simulator.FetchNodes(ctx, http.DefaultClient, "://bad", "tv", ""); err == nil {
		t.Fatal("bad base URL: no error")
	}
}

// TestDeviceUsesDirectory: with DirectoryURL the device connects to the
// nodes the directory lists, and falls back to Nodes when it is down.
func TestDeviceUsesDirectory(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))
	dir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("client") != "vac-0001" {
			http.Error(w, `{"error":"who?"}`, http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(simulator.NodesResponse{Service: "vacuum", HandshakeURL: []string{n2.URL(), n1.URL()}})
	}))
	defer dir.Close()
	d := newDevice(t, simulator.DeviceConfig{Service: "vacuum", ClientID: "vac-0001", DirectoryURL: dir.URL,
		Nodes: []string{n1.URL()}, Token: e.Token("vacuum", "vac-0001", token.IssueOptions{})})
	run(t, d)
	if w := waitConnected(t, d); w.Node != "n2" {
		t.Fatalf("on %s, want n2 (the directory's first)", w.Node)
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	d = newDevice(t, simulator.DeviceConfig{Service: "vacuum", DirectoryURL: dead.URL,
		Nodes: []string{n1.URL()}, Token: e.Token("vacuum", "vac-0002", token.IssueOptions{})})
	run(t, d)
	if w := waitConnected(t, d); w.Node != "n1" {
		t.Fatalf("on %s, want n1 (the fallback list)", w.Node)
	}
}

// TestDeviceCloseReconnects: Close ends the current connection only.
func TestDeviceCloseReconnects(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	d := newDevice(t, simulator.DeviceConfig{Service: "vacuum", Token: e.Token("vacuum", "vac-1", token.IssueOptions{}),
		Nodes: []string{n1.URL()}, MinBackoff: 10 * time.Millisecond})
	errc := run(t, d)
	w1 := waitConnected(t, d)
	d.Close()
	testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if w, ok := d.Welcome(); !ok || w.Conn == w1.Conn {
			return errors.New("not reconnected")
		}
		return nil
	})
	if done, err := errc.ended(); done {
		t.Fatalf("Run ended: %v", err)
	}
}
