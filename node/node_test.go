package node_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testutil"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/node"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// inbox returns a fresh reply subject under the inbox prefix of the
// service of push subject (the one node.reply_prefixes allows by default).
func inbox(subject string) string {
	svc, _ := bus.MustSubjects("").PushService(subject)
	return bus.InboxPrefix(svc) + "." + nuid.Next()
}

// requestMsg sends m as a request with a reply subject of its service's
// inbox and returns the first reply.
func requestMsg(nc *nats.Conn, m *nats.Msg, timeout time.Duration) (*nats.Msg, error) {
	m.Reply = inbox(m.Subject)
	sub, err := nc.SubscribeSync(m.Reply)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(m); err != nil {
		return nil, err
	}
	resp, err := sub.NextMsg(timeout)
	if err == nil && len(resp.Data) == 0 && resp.Header.Get("Status") == "503" {
		return nil, nats.ErrNoResponders
	}
	return resp, err
}

// request pushes data on subject and returns the first reply.
func request(t *testing.T, nc *nats.Conn, subject string, data []byte, hdr nats.Header) (bus.Reply, error) {
	t.Helper()
	m := &nats.Msg{Subject: subject, Data: data, Header: hdr}
	resp, err := requestMsg(nc, m, 30*time.Second)
	if err != nil {
		return bus.Reply{}, err
	}
	var r bus.Reply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		t.Fatalf("reply %q: %v", resp.Data, err)
	}
	return r, nil
}

// gather pushes and collects replies until every node that answered sent
// its final reply (and at least settle passed).
func gather(t *testing.T, nc *nats.Conn, subject string, data []byte) []bus.Reply {
	t.Helper()
	reply := inbox(subject)
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, reply, data); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	seen, final := map[string]bool{}, map[string]bool{}
	var out []bus.Reply
	for {
		if len(seen) > 0 && len(seen) == len(final) && time.Since(start) > 100*time.Millisecond {
			return out
		}
		m, err := sub.NextMsg(100 * time.Millisecond)
		if errors.Is(err, nats.ErrTimeout) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("gather %s: timed out with %d replies", subject, len(out))
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("Status") == "503" {
			return nil
		}
		var r bus.Reply
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("reply %q: %v", m.Data, err)
		}
		seen[r.Node] = true
		if r.Final {
			final[r.Node] = true
			out = append(out, r)
		}
	}
}

func TestPushToConnDeviceGroupAll(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))

	var got sync.Map // device -> []string payloads
	onPush := func(dev string) simulator.PushHandler {
		return func(p simulator.Push) (string, []byte) {
			v, _ := got.LoadOrStore(dev, &[]string{})
			*v.(*[]string) = append(*v.(*[]string), string(p.Data))
			return "done-" + dev, []byte(`{"battery":80}`)
		}
	}
	devs := []string{"vac-1", "vac-2", "vac-3"}
	welcomes := map[string]protocol.Frame{}
	for i, dev := range devs {
		nodeURL := n1.URL()
		if i == 2 {
			nodeURL = n2.URL()
		}
		tok := e.Token("vacuum", dev, token.IssueOptions{Groups: []string{"floor-1"}, Tier: "paid"})
		_, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{nodeURL}, OnPush: onPush(dev)}, dev)
		welcomes[dev] = w
	}
	if w := welcomes["vac-1"]; !strings.HasPrefix(w.Conn, "n1.") || w.Service != "vacuum" || w.Device != "vac-1" || w.Tier != "paid" {
		t.Fatalf("welcome = %+v", w)
	}

	t.Run("conn", func(t *testing.T) {
		r, err := request(t, e.NC, e.Subj.Conn("vacuum", welcomes["vac-2"].Conn), []byte(`{"cmd":"start"}`),
			nats.Header{bus.HeaderMsgID: {"m-1"}})
		if err != nil {
			t.Fatal(err)
		}
		if !r.Final || r.Status != bus.StatusAcked || r.Delivered != 1 || r.Acked != 1 || r.MsgID != "m-1" {
			t.Fatalf("reply = %+v", r)
		}
		if len(r.Acks) != 1 || r.Acks[0].Device != "vac-2" || r.Acks[0].Result != "done-vac-2" || string(r.Acks[0].Data) != `{"battery":80}` {
			t.Fatalf("acks = %+v", r.Acks)
		}
	})
	t.Run("device", func(t *testing.T) {
		rs := gather(t, e.NC, e.Subj.Device("vacuum", "vac-3"), []byte(`"hello"`))
		if len(rs) != 1 || rs[0].Node != "n2" || rs[0].Status != bus.StatusAcked || rs[0].Acks[0].Result != "done-vac-3" {
			t.Fatalf("replies = %+v", rs)
		}
	})
	t.Run("group", func(t *testing.T) {
		rs := gather(t, e.NC, e.Subj.Group("vacuum", "floor-1"), []byte(`{"g":1}`))
		total := 0
		for _, r := range rs {
			if r.Status != bus.StatusAcked {
				t.Fatalf("reply = %+v", r)
			}
			total += r.Acked
		}
		if len(rs) != 2 || total != 3 {
			t.Fatalf("replies = %+v", rs)
		}
	})
	t.Run("all", func(t *testing.T) {
		rs := gather(t, e.NC, e.Subj.All("vacuum"), []byte(`{"all":1}`))
		total := 0
		for _, r := range rs {
			total += r.Acked
			if r.Results["done-vac-1"]+r.Results["done-vac-2"]+r.Results["done-vac-3"] != r.Acked {
				t.Fatalf("results = %+v", r.Results)
			}
		}
		if total != 3 {
			t.Fatalf("replies = %+v", rs)
		}
	})
	t.Run("binary payload", func(t *testing.T) {
		raw := []byte{0, 1, 2, 0xff}
		r, err := request(t, e.NC, e.Subj.Conn("vacuum", welcomes["vac-1"].Conn), raw, nil)
		if err != nil || r.Status != bus.StatusAcked {
			t.Fatalf("reply = %+v, %v", r, err)
		}
		v, _ := got.Load("vac-1")
		list := *v.(*[]string)
		if last := list[len(list)-1]; last != string(raw) {
			t.Fatalf("device got %q, want %q", last, raw)
		}
	})
	t.Run("no ack", func(t *testing.T) {
		r, err := request(t, e.NC, e.Subj.Conn("vacuum", welcomes["vac-1"].Conn), []byte(`1`), nats.Header{bus.HeaderAck: {bus.AckNone}})
		if err != nil || r.Status != bus.StatusSent || r.Delivered != 1 {
			t.Fatalf("reply = %+v, %v", r, err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		r, err := request(t, e.NC, e.Subj.Conn("vacuum", welcomes["vac-1"].Conn), make([]byte, 300<<10), nil)
		if err != nil || r.Status != bus.StatusRejected || r.Error != bus.ErrCodeTooLarge {
			t.Fatalf("reply = %+v, %v", r, err)
		}
	})
	t.Run("wrong service", func(t *testing.T) {
		// The connection exists, but under another service: offline.
		r, err := request(t, e.NC, e.Subj.Conn("tv", welcomes["vac-1"].Conn), []byte(`1`), nil)
		if err != nil || r.Status != bus.StatusOffline {
			t.Fatalf("reply = %+v, %v", r, err)
		}
	})
}

func TestOfflineAtOnce(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	_, _ = e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}}, "vac-1")

	for _, tc := range []struct {
		name, subject string
		wantNoResp    bool
	}{
		{"unknown conn on live node", e.Subj.Conn("vacuum", "n1.nosuchconn"), false},
		{"conn on unknown node", e.Subj.Conn("vacuum", "n9.abc"), true},
		{"unknown device", e.Subj.Device("vacuum", "vac-404"), true},
		{"unknown group", e.Subj.Group("vacuum", "nobody"), true},
		{"service without connections", e.Subj.All("tv"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r, err := request(t, e.NC, tc.subject, []byte(`1`), nats.Header{bus.HeaderTimeout: {"20000"}})
			took := time.Since(start)
			if tc.wantNoResp {
				if !errors.Is(err, nats.ErrNoResponders) {
					t.Fatalf("err = %v, reply %+v; want no responders", err, r)
				}
			} else if err != nil || r.Status != bus.StatusOffline || r.Delivered != 0 {
				t.Fatalf("reply = %+v, %v", r, err)
			}
			// At once, not after the 20s ack timeout (a bound loose enough
			// for a busy machine).
			if took > 10*time.Second {
				t.Fatalf("offline answer took %v", took)
			}
		})
	}
}

func TestAckTimeoutAndClosedBeforeAck(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	block := make(chan struct{})
	d, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}, OnPush: func(p simulator.Push) (string, []byte) {
		<-block
		return "", nil
	}}, "vac-1")
	defer close(block)

	start := time.Now()
	r, err := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`1`), nats.Header{bus.HeaderTimeout: {"300"}})
	if err != nil || r.Status != bus.StatusTimeout || r.Delivered != 1 || r.Acked != 0 {
		t.Fatalf("reply = %+v, %v", r, err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("timeout reply after %v, before the 300ms asked", took)
	}

	// A push that is pending when the connection closes is answered "closed"
	// at once, not after the timeout.
	replies := make(chan bus.Reply, 1)
	go func() {
		r, _ := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`2`), nats.Header{bus.HeaderTimeout: {"20000"}})
		replies <- r
	}()
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n1.Stats().Pending == 0 {
			return errors.New("push not pending yet")
		}
		return nil
	})
	start = time.Now()
	d.Close()
	select {
	case r := <-replies:
		if r.Status != bus.StatusClosed || r.Closed != 1 {
			t.Fatalf("reply = %+v", r)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("closed reply took %v: it waited for the 20s timeout", took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reply")
	}
}

func TestUpstreamAndEvents(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))

	events, err := e.NC.SubscribeSync(e.Subj.Events("vacuum"))
	if err != nil {
		t.Fatal(err)
	}
	up, err := e.NC.QueueSubscribeSync(e.Subj.Upstream("vacuum"), "app")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	frames := make(chan protocol.Frame, 4)
	tok := e.Token("vacuum", "vac-7", token.IssueOptions{Tier: "free", Groups: []string{"g1"}})
	d, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n1.URL()}, AuthInFrame: true,
		OnFrame: func(f protocol.Frame) { frames <- f }}, "vac-7")

	ev := nextEvent(t, events)
	if ev.Type != bus.EventConnected || ev.Conn != w.Conn || ev.Device != "vac-7" || ev.Node != "n1" || ev.Tier != "free" || len(ev.Groups) != 1 {
		t.Fatalf("connected event = %+v", ev)
	}

	if err := d.Send("u-1", []byte(`{"temp":21.5}`)); err != nil {
		t.Fatal(err)
	}
	m, err := up.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != `{"temp":21.5}` || m.Header.Get(bus.HeaderDevice) != "vac-7" || m.Header.Get(bus.HeaderConn) != w.Conn ||
		m.Header.Get(bus.HeaderNode) != "n1" || m.Header.Get(bus.HeaderTier) != "free" || m.Header.Get(bus.HeaderMsgID) != "u-1" {
		t.Fatalf("upstream = %q %v", m.Data, m.Header)
	}
	select {
	case f := <-frames:
		if f.Type != protocol.TypeAck || f.ID != "u-1" || f.Result != "ok" {
			t.Fatalf("upstream ack frame = %+v", f)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ack of the upstream message")
	}

	// Binary upstream.
	if err := d.Send("", []byte{0xde, 0xad}); err != nil {
		t.Fatal(err)
	}
	if m, err = up.NextMsg(5 * time.Second); err != nil || string(m.Data) != "\xde\xad" {
		t.Fatalf("binary upstream = %q, %v", m.Data, err)
	}

	d.Close()
	ev = nextEvent(t, events)
	if ev.Type != bus.EventDisconnected || ev.Conn != w.Conn || ev.Reason != "client_closed" || ev.Code != 1000 || ev.Since.IsZero() {
		t.Fatalf("disconnected event = %+v", ev)
	}
}

func nextEvent(t *testing.T, sub *nats.Subscription) bus.Event {
	t.Helper()
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no event: %v", err)
	}
	var ev bus.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(bus.HeaderEvent) != ev.Type {
		t.Fatalf("event header %q, body type %q", m.Header.Get(bus.HeaderEvent), ev.Type)
	}
	return ev
}

// rawConn is a bare WebSocket client for feeding the node bad input.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dialRaw(t *testing.T, url string, hdr http.Header) *rawConn {
	t.Helper()
	d := ws.Dialer{Protocols: []string{protocol.Subprotocol}}
	if hdr != nil {
		d.Header = ws.HandshakeHeaderHTTP(hdr)
	}
	nc, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	if br == nil {
		br = bufio.NewReader(nc)
	}
	return &rawConn{t: t, nc: nc, r: br}
}

func (c *rawConn) send(op ws.OpCode, payload []byte) {
	c.t.Helper()
	if err := ws.WriteFrame(c.nc, ws.MaskFrameInPlace(ws.NewFrame(op, true, payload))); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next reads the next data frame, or the close code when the node closes.
func (c *rawConn) next() (protocol.Frame, protocol.CloseCode) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			return protocol.Frame{}, 1006
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.r, p); err != nil {
			return protocol.Frame{}, 1006
		}
		switch h.OpCode {
		case ws.OpClose:
			if len(p) < 2 {
				return protocol.Frame{}, 1005
			}
			return protocol.Frame{}, protocol.CloseCode(binary.BigEndian.Uint16(p))
		case ws.OpPing:
			c.send(ws.OpPong, p)
			continue
		case ws.OpText:
			var f protocol.Frame
			if err := protocol.Decode(p, &f); err != nil {
				c.t.Fatalf("node sent a bad frame %q: %v", p, err)
			}
			return f, 0
		}
	}
}

// expectClose reads an error frame with errCode (unless empty) and then a close with code.
func (c *rawConn) expectClose(errCode string, code protocol.CloseCode) {
	c.t.Helper()
	if errCode != "" {
		f, cc := c.next()
		if f.Type != protocol.TypeError || f.Code != errCode {
			c.t.Fatalf("got frame %+v (close %d), want error %q", f, cc, errCode)
		}
	}
	f, cc := c.next()
	if cc != code {
		c.t.Fatalf("got frame %+v close %d, want close %d", f, cc, code)
	}
}

func TestBadInput(t *testing.T) {
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.AuthTimeout = 300 * time.Millisecond
	cfg.MaxFrameBytes = 4096
	n1 := e.StartNode(cfg)

	// A healthy device that must not notice any of this.
	var pushes atomic.Int64
	_, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}, OnPush: func(simulator.Push) (string, []byte) {
		pushes.Add(1)
		return "", nil
	}}, "healthy")

	kr := testenv.Keys(t)
	expiredKeys := testenv.Keys(t)
	expiredKeys.SetClock(func() time.Time { return time.Now().Add(-2 * time.Hour) })
	expired, err := expiredKeys.Issue("vacuum", "vac-x", token.IssueOptions{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := kr.Issue("vacuum", "vac-x", token.IssueOptions{})
	tvToken, _ := kr.Issue("tv", "tv-1", token.IssueOptions{})
	// A token claiming vacuum, signed with the tv key.
	forged := forge(t, "vacuum", testenv.Services["tv"])

	cases := []struct {
		name    string
		hdr     http.Header
		first   []byte
		errCode string
		code    protocol.CloseCode
	}{
		{"garbage token in header", http.Header{"Authorization": {"Bearer nope"}}, nil, protocol.ErrBadToken, protocol.CloseBadToken},
		{"garbage token in frame", nil, []byte(`{"type":"auth","token":"a.b.c"}`), protocol.ErrBadToken, protocol.CloseBadToken},
		{"expired token", nil, []byte(`{"type":"auth","token":"` + expired + `"}`), protocol.ErrTokenExpired, protocol.CloseTokenExpired},
		{"token of another service", nil, []byte(`{"type":"auth","token":"` + tvToken + `","service":"vacuum"}`), protocol.ErrForbidden, protocol.CloseForbidden},
		{"token signed with another service's key", nil, []byte(`{"type":"auth","token":"` + forged + `"}`), protocol.ErrBadToken, protocol.CloseBadToken},
		{"malformed JSON first", nil, []byte(`{"type":"auth",`), protocol.ErrBadFrame, protocol.CloseBadFrame},
		{"push before auth", nil, []byte(`{"type":"ack","id":"1"}`), protocol.ErrBadFrame, protocol.CloseBadFrame},
		{"oversized frame", nil, make([]byte, 5000), protocol.ErrTooBig, protocol.CloseTooBig},
		{"no auth before the deadline", nil, nil, protocol.ErrAuthTimeout, protocol.CloseAuthTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, n1.URL(), tc.hdr)
			if tc.first != nil {
				c.send(ws.OpText, tc.first)
			}
			c.expectClose(tc.errCode, tc.code)
		})
	}

	t.Run("token in query", func(t *testing.T) {
		c := dialRaw(t, n1.URL()+"?token="+good, nil)
		if f, _ := c.next(); f.Type != protocol.TypeWelcome || f.Device != "vac-x" {
			t.Fatalf("frame = %+v", f)
		}
	})

	t.Run("after auth, bad frames get errors and the connection stays", func(t *testing.T) {
		c := dialRaw(t, n1.URL(), http.Header{"Authorization": {"Bearer " + good}})
		if f, _ := c.next(); f.Type != protocol.TypeWelcome {
			t.Fatalf("frame = %+v", f)
		}
		for _, tc := range []struct{ in, code string }{
			{`not json`, protocol.ErrBadFrame},
			{`{"type":"bogus","id":"7"}`, protocol.ErrUnknownType},
			{`{"type":"ack","id":"999"}`, protocol.ErrUnknownAck},
			{`{"type":"auth","token":"x"}`, protocol.ErrAlreadyAuthed},
			{`{"type":"msg","enc":"base64","data":"%%%"}`, protocol.ErrBadFrame},
			{`{"type":"msg","enc":"rot13","data":"x"}`, protocol.ErrBadFrame},
		} {
			c.send(ws.OpText, []byte(tc.in))
			if f, cc := c.next(); f.Type != protocol.TypeError || f.Code != tc.code {
				t.Fatalf("%s: frame = %+v close %d, want error %s", tc.in, f, cc, tc.code)
			}
		}
		c.send(ws.OpText, []byte(`{"type":"ping","id":"p1"}`))
		if f, _ := c.next(); f.Type != protocol.TypePong || f.ID != "p1" {
			t.Fatalf("frame = %+v, want pong", f)
		}
		// Invalid UTF-8 in a text frame is a protocol violation (1007).
		c.send(ws.OpText, []byte{'"', 0xff, '"'})
		c.expectClose("", protocol.CloseInvalidData)
	})

	t.Run("wrong path", func(t *testing.T) {
		_, _, _, err := ws.Dialer{}.Dial(context.Background(), strings.Replace(n1.URL(), "/ws", "/nope", 1))
		var se ws.StatusError
		if !errors.As(err, &se) || int(se) != 404 {
			t.Fatalf("err = %v, want 404", err)
		}
	})

	// The healthy device still gets pushes.
	r, err := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`1`), nil)
	if err != nil || r.Status != bus.StatusAcked || pushes.Load() != 1 {
		t.Fatalf("healthy device: reply %+v, %v, pushes %d", r, err, pushes.Load())
	}
	st := n1.Stats()
	if st.AuthFailed < 5 || st.AuthTimeouts < 1 || st.BadFrames < 3 {
		t.Fatalf("stats = %+v", st)
	}
}

// forge signs a token claiming service with an HMAC secret that belongs to another service.
func forge(t *testing.T, service, secret string) string {
	t.Helper()
	kr, err := token.NewKeyring(map[string][]token.Key{service: {{ID: "tv-test", HMACSecret: secret}}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := kr.Issue(service, "intruder", token.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSlowReaderDoesNotSlowOthers(t *testing.T) {
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.MaxPendingBytes = 256 << 10
	cfg.MaxPushBytes = 64 << 10
	n1 := e.StartNode(cfg)

	// The slow device authenticates and then never reads again.
	tok := e.Token("vacuum", "slow", token.IssueOptions{})
	slow := dialRaw(t, n1.URL(), http.Header{"Authorization": {"Bearer " + tok}})
	f, _ := slow.next()
	if f.Type != protocol.TypeWelcome {
		t.Fatalf("frame = %+v", f)
	}
	if tcp, ok := slow.nc.(*net.TCPConn); ok {
		_ = tcp.SetReadBuffer(4096)
	}
	_, fast := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}}, "fast")

	big := []byte(`"` + strings.Repeat("x", 60<<10) + `"`)
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; ; i++ {
		// Fire-and-forget pushes to the slow device: the node must absorb
		// them without blocking, then drop the device as a slow consumer.
		if err := e.NC.Publish(e.Subj.Conn("vacuum", f.Conn), big); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r, err := request(t, e.NC, e.Subj.Conn("vacuum", fast.Conn), []byte(`1`), nil)
		if err != nil || r.Status != bus.StatusAcked {
			t.Fatalf("fast device push %d: %+v, %v", i, r, err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("fast device push %d took %v: the slow device held it up", i, took)
		}
		if n1.Stats().SlowConsumers == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow device not dropped after %d pushes: %+v", i+1, n1.Stats())
		}
	}
	r, err := request(t, e.NC, e.Subj.Conn("vacuum", f.Conn), []byte(`1`), nil)
	if err != nil || r.Status != bus.StatusOffline {
		t.Fatalf("push to the dropped device: %+v, %v", r, err)
	}
}

func TestShutdownMovesDevices(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))
	nodes := []string{n1.URL(), n2.URL()}

	events, _ := e.NC.SubscribeSync(e.Subj.Events("vacuum"))
	_ = e.NC.Flush()
	var devs []*simulator.Device
	for i := range 5 {
		d, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: nodes}, fmt.Sprintf("vac-%d", i))
		if w.Node != "n1" {
			t.Fatalf("device %d on %s, want n1 (first of the list)", i, w.Node)
		}
		devs = append(devs, d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for i, d := range devs {
		testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			if w, ok := d.Welcome(); !ok || w.Node != "n2" {
				return fmt.Errorf("device %d not on n2 yet (%+v)", i, w)
			}
			return nil
		})
		rs := gather(t, e.NC, e.Subj.Device("vacuum", fmt.Sprintf("vac-%d", i)), []byte(`1`))
		if len(rs) != 1 || rs[0].Node != "n2" || rs[0].Status != bus.StatusAcked {
			t.Fatalf("push to moved device %d: %+v", i, rs)
		}
	}
	// Every device was announced disconnected from n1 for shutdown (by
	// leaving after the reconnect frame, or closed by the node).
	disc := 0
	for disc < 5 {
		ev := nextEvent(t, events)
		if ev.Type == bus.EventDisconnected && ev.Node == "n1" {
			disc++
		}
	}
	if n2.Connections() != 5 {
		t.Fatalf("n2 holds %d connections", n2.Connections())
	}
}

func TestTakeover(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	n2 := e.StartNode(testenv.FastConfig("n2"))
	tok := e.Token("vacuum", "vac-1", token.IssueOptions{})
	old := dialRaw(t, n1.URL(), http.Header{"Authorization": {"Bearer " + tok}})
	if f, _ := old.next(); f.Type != protocol.TypeWelcome {
		t.Fatalf("frame = %+v", f)
	}
	_, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n2.URL()}}, "vac-1")
	old.expectClose("replaced", protocol.CloseReplaced)
	// n1 may still answer "offline" (delivered 0) while its unsubscription
	// from the device's subject is on its way: only n2 delivers.
	var delivered []bus.Reply
	for _, r := range gather(t, e.NC, e.Subj.Device("vacuum", "vac-1"), []byte(`1`)) {
		if r.Delivered > 0 {
			delivered = append(delivered, r)
		}
	}
	if len(delivered) != 1 || delivered[0].Acks[0].Conn != w.Conn {
		t.Fatalf("replies = %+v", delivered)
	}
}

func TestPingTimeoutClosesDeadPeer(t *testing.T) {
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.PingInterval = 100 * time.Millisecond
	cfg.PingTimeout = 400 * time.Millisecond
	n1 := e.StartNode(cfg)
	events, _ := e.NC.SubscribeSync(e.Subj.Events("vacuum"))
	_ = e.NC.Flush()
	tok := e.Token("vacuum", "dead", token.IssueOptions{})
	c := dialRaw(t, n1.URL(), http.Header{"Authorization": {"Bearer " + tok}})
	if f, _ := c.next(); f.Type != protocol.TypeWelcome {
		t.Fatalf("frame = %+v", f)
	}
	// The raw client never answers pings from here on (it does not read).
	if ev := nextEvent(t, events); ev.Type != bus.EventConnected {
		t.Fatalf("event = %+v", ev)
	}
	ev := nextEvent(t, events)
	if ev.Type != bus.EventDisconnected || ev.Reason != "ping_timeout" {
		t.Fatalf("event = %+v", ev)
	}
}

// A device that talks all the time but is sent nothing still gets a ping
// every ping interval: the node writes something at least that often, so
// that a device watching the node never takes it for dead.
func TestNodePingsTalkativeDevice(t *testing.T) {
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.PingInterval = 200 * time.Millisecond
	cfg.PingTimeout = 5 * time.Second
	n1 := e.StartNode(cfg)
	tok := e.Token("vacuum", "chatty", token.IssueOptions{})
	c := dialRaw(t, n1.URL(), http.Header{"Authorization": {"Bearer " + tok}})
	if f, _ := c.next(); f.Type != protocol.TypeWelcome {
		t.Fatalf("frame = %+v", f)
	}
	stop := make(chan struct{})
	talked := make(chan struct{})
	go func() { // an upstream message every 20ms: the node always hears from it
		defer close(talked)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			f := ws.MaskFrameInPlace(ws.NewFrame(ws.OpText, true, []byte(`{"type":"msg","data":1}`)))
			if ws.WriteFrame(c.nc, f) != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-talked }()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	pings := 0
	for pings < 3 {
		h, err := ws.ReadHeader(c.r)
		if err != nil {
			t.Fatalf("after %d pings: %v", pings, err)
		}
		if _, err := io.CopyN(io.Discard, c.r, h.Length); err != nil {
			t.Fatal(err)
		}
		if h.OpCode == ws.OpPing {
			pings++
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  node.Config
		want string
	}{
		{node.Config{}, "node.id"},
		{node.Config{ID: "a.b"}, "node.id"},
		{node.Config{ID: "n", Path: "ws"}, "node.path"},
		{node.Config{ID: "n", PublicURL: "http://x"}, "node.public_url"},
		{node.Config{ID: "n", PingInterval: time.Second, PingTimeout: time.Second}, "node.ping_timeout"},
		{node.Config{ID: "n", MaxPendingBytes: 10, MaxPushBytes: 100}, "node.max_pending_bytes"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
	if err := (node.Config{ID: "n1"}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// An app may publish on device subjects (that is how it pushes), but it
// cannot forge the takeover that would disconnect a device.
func TestForgedTakeoverIsRejected(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	closed := make(chan protocol.CloseCode, 1)
	_, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()},
		OnClose: func(code protocol.CloseCode, _ string) { closed <- code }}, "vac-1")
	for _, sig := range []string{"", "forged"} {
		m := nats.NewMsg(e.Subj.Device("vacuum", "vac-1"))
		m.Header.Set(bus.HeaderControl, bus.ControlTakeover)
		m.Header.Set(bus.HeaderConn, "n9.intruder")
		m.Header.Set("Tether-Since", strconv.FormatInt(time.Now().UnixNano(), 10))
		if sig != "" {
			m.Header.Set("Tether-Control-Sig", sig)
		}
		resp, err := requestMsg(e.NC, m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r bus.Reply
		if err := json.Unmarshal(resp.Data, &r); err != nil || r.Status != bus.StatusRejected {
			t.Fatalf("reply to a forged takeover = %s, %v", resp.Data, err)
		}
	}
	// The device is still connected and reachable.
	r, err := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`1`), nil)
	if err != nil || r.Status != bus.StatusAcked {
		t.Fatalf("push after forged takeovers: %+v, %v", r, err)
	}
	select {
	case code := <-closed:
		t.Fatalf("device closed with %d", code)
	default:
	}
}

func TestMetricsAndHealth(t *testing.T) {
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.MetricsListen = "127.0.0.1:0"
	n1 := e.StartNode(cfg)
	_, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}}, "vac-1")
	if _, err := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`1`), nil); err != nil {
		t.Fatal(err)
	}
	base := "http://" + n1.MetricsAddr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	for _, want := range []string{
		`tether_node_connections{node="n1"} 1` + "\n", `tether_node_acked_total{node="n1"} 1` + "\n",
		`tether_node_deliveries_total{node="n1"} 1` + "\n", `tether_node_nats_connected{node="n1"} 1` + "\n",
		`tether_node_service_connections{node="n1",service="vacuum",tier="none"} 1` + "\n",
		`tether_node_service_acked_total{node="n1",service="vacuum"} 1` + "\n",
		`tether_node_receipt_latency_seconds_count{node="n1",service="vacuum"} 1` + "\n",
		`tether_node_ack_latency_seconds_count{node="n1",service="vacuum"} 1` + "\n",
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics (%d) lacks %q:\n%s", code, want, body)
		}
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Fatalf("/healthz = %d %s", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Fatalf("pprof served without node.pprof: %d", code)
	}
}

// A fan-out larger than the split threshold is written by several
// goroutines; every connection still gets it once and every ack counts.
func TestParallelFanOut(t *testing.T) {
	defer node.SetFanOutChunk(2)()
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	var got atomic.Int64
	for i := range 9 {
		e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n1.URL()}, OnPush: func(simulator.Push) (string, []byte) {
			got.Add(1)
			return "", nil
		}}, fmt.Sprintf("vac-%d", i))
	}
	rs := gather(t, e.NC, e.Subj.All("vacuum"), []byte(`{"all":1}`))
	if len(rs) != 1 || rs[0].Delivered != 9 || rs[0].Acked != 9 || rs[0].Status != bus.StatusAcked {
		t.Fatalf("replies = %+v", rs)
	}
	r, err := request(t, e.NC, e.Subj.All("vacuum"), []byte(`2`), nats.Header{bus.HeaderAck: {bus.AckNone}})
	if err != nil || r.Status != bus.StatusSent || r.Delivered != 9 {
		t.Fatalf("no-ack reply = %+v, %v", r, err)
	}
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got.Load() != 18 {
			return fmt.Errorf("devices got %d pushes, want 18", got.Load())
		}
		return nil
	})
}

// A malformed ack is refused without counting; a late ack is told so.
func TestAckEdgeCases(t *testing.T) {
	e := testenv.New(t)
	n1 := e.StartNode(testenv.FastConfig("n1"))
	tok := e.Token("vacuum", "vac-1", token.IssueOptions{})
	c := dialRaw(t, n1.URL(), http.Header{"Authorization": {"Bearer " + tok}})
	w, _ := c.next()
	if w.Type != protocol.TypeWelcome {
		t.Fatalf("frame = %+v", w)
	}
	replies := make(chan bus.Reply, 1)
	go func() {
		r, _ := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`1`), nats.Header{bus.HeaderTimeout: {"4000"}})
		replies <- r
	}()
	push, _ := c.next()
	if push.Type != protocol.TypePush {
		t.Fatalf("frame = %+v", push)
	}
	c.send(ws.OpText, []byte(`{"type":"ack","id":"`+push.ID+`","enc":"base64","data":"%%%"}`))
	if f, _ := c.next(); f.Type != protocol.TypeError || f.Code != protocol.ErrBadFrame || f.ID != push.ID {
		t.Fatalf("bad ack answered %+v", f)
	}
	c.send(ws.OpText, []byte(`{"type":"ack","id":"`+push.ID+`","result":"fine","enc":"base64","data":"AAE="}`))
	select {
	case r := <-replies:
		if r.Status != bus.StatusAcked || len(r.Acks) != 1 || r.Acks[0].Result != "fine" || r.Acks[0].Enc != "base64" || string(r.Acks[0].Data) != `"AAE="` {
			t.Fatalf("reply = %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reply")
	}

	// An ack after the timeout: the app already has "timeout"; the device
	// is told its ack came too late.
	go func() {
		r, _ := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`2`), nats.Header{bus.HeaderTimeout: {"50"}})
		replies <- r
	}()
	push, _ = c.next()
	if r := <-replies; r.Status != bus.StatusTimeout {
		t.Fatalf("reply = %+v", r)
	}
	c.send(ws.OpText, []byte(`{"type":"ack","id":"`+push.ID+`"}`))
	if f, _ := c.next(); f.Type != protocol.TypeError || f.Code != protocol.ErrUnknownAck {
		t.Fatalf("late ack answered %+v", f)
	}
}

// A Start that fails half way undoes what it did: no listener, no
// subscription, no goroutine is left (goleak checks the last at the end).
func TestStartFailureCleansUp(t *testing.T) {
	e := testenv.New(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testenv.FastConfig("n1")
	cfg.MetricsListen = busy.Addr().String()
	n, err := node.New(cfg, node.Deps{NATS: e.NC, Keys: e.Keys, Log: testenv.Log()})
	if err != nil {
		t.Fatal(err)
	}
	subs := e.NC.NumSubscriptions()
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "metrics listen") {
		t.Fatalf("Start = %v, want the metrics listener's error", err)
	}
	if got := e.NC.NumSubscriptions(); got != subs {
		t.Fatalf("%d subscriptions after the failed start, %d before", got, subs)
	}
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
