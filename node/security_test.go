package node_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/internal/certs/certstest"
	"github.com/tetherhq/tether/internal/testenv"
	"github.com/tetherhq/tether/internal/testutil"
	"github.com/tetherhq/tether/node"
	"github.com/tetherhq/tether/protocol"
	"github.com/tetherhq/tether/simulator"
	"github.com/tetherhq/tether/token"
)

// hostPort returns the host:port of a ws:// or wss:// URL.
func hostPort(t *testing.T, url string) string {
	t.Helper()
	rest := strings.TrimPrefix(strings.TrimPrefix(url, "ws://"), "wss://")
	hp, _, _ := strings.Cut(rest, "/")
	return hp
}

// rawRequest sends req on a fresh TCP connection and returns the status
// line of the answer, and whether the node then closed the connection.
func rawRequest(t *testing.T, addr, req string) (status string, closed bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		// The node may close before the whole request is written; its
		// answer is still there to read.
		t.Logf("write: %v", err)
	}
	r := bufio.NewReader(c)
	status, err = r.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer to a %d-byte request: %v", len(req), err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil || line == "\r\n" {
			break
		}
	}
	_, _ = io.Copy(io.Discard, r) // the body; then EOF once the node closes
	_, err = r.ReadByte()
	return strings.TrimSpace(status), errors.Is(err, io.EOF) || err != nil
}

func upgradeRequest(target string, extra ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + strings.Join(extra, "") + "\r\n"
}

// The handshake is read under caps: a long request line is answered 414,
// a long header line or a large request 431, and the connection closed;
// a request within them upgrades.
func TestHandshakeLimits(t *testing.T) {
	e := testenv.New(t)
	n := e.StartNode(testenv.FastConfig("n1"))
	addr := hostPort(t, n.URL())
	cases := []struct {
		name, req, want string
	}{
		{"request line over 8 KiB", upgradeRequest("/ws?token=" + strings.Repeat("a", 9000)), "HTTP/1.1 414 URI Too Long"},
		{"header line over 8 KiB", upgradeRequest("/ws", "X-Big: "+strings.Repeat("b", 9000)+"\r\n"), "HTTP/1.1 431 Request Header Fields Too Large"},
		{"headers over 16 KiB", upgradeRequest("/ws", strings.Repeat("X-Many: "+strings.Repeat("c", 4000)+"\r\n", 5)), "HTTP/1.1 431 Request Header Fields Too Large"},
		{"endless line, no newline", "GET /ws?" + strings.Repeat("d", 64<<10), "HTTP/1.1 414 URI Too Long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, closed := rawRequest(t, addr, tc.req)
			if status != tc.want || !closed {
				t.Fatalf("answer %q, closed %v; want %q and a close", status, closed, tc.want)
			}
		})
	}
	t.Run("within the limits", func(t *testing.T) {
		tok := e.Token("vacuum", "vac-1", token.IssueOptions{})
		c := dialRaw(t, n.URL()+"?token="+tok, http.Header{"X-Padding": {strings.Repeat("p", 7000)}})
		if f, _ := c.next(); f.Type != protocol.TypeWelcome {
			t.Fatalf("frame = %+v, want welcome", f)
		}
	})
	if st := n.Stats(); st.HandshakeTooBig != int64(len(cases)) {
		t.Fatalf("HandshakeTooBig = %d, want %d", st.HandshakeTooBig, len(cases))
	}
}

// writeFrame writes a masked frame with any header, valid or not.
func writeFrame(t *testing.T, c net.Conn, fin bool, op ws.OpCode, payload []byte) {
	t.Helper()
	f := ws.NewFrame(op, fin, append([]byte(nil), payload...))
	if err := ws.WriteFrame(c, ws.MaskFrameInPlace(f)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// Control frames carry at most 125 bytes and are never fragmented: others
// are a protocol error (1002). A device's close code is reported in its
// event, never sent back as the node's own.
func TestControlFramesAndCloseCodes(t *testing.T) {
	e := testenv.New(t)
	n := e.StartNode(testenv.FastConfig("n1"))
	events, err := e.NC.SubscribeSync(e.Subj.Events("vacuum"))
	if err != nil {
		t.Fatal(err)
	}
	_ = e.NC.Flush()
	authed := func(t *testing.T, device string) *rawConn {
		t.Helper()
		c := dialRaw(t, n.URL(), http.Header{"Authorization": {"Bearer " + e.Token("vacuum", device, token.IssueOptions{})}})
		if f, _ := c.next(); f.Type != protocol.TypeWelcome {
			t.Fatalf("frame = %+v, want welcome", f)
		}
		return c
	}
	closePayload := func(code uint16, reason string) []byte {
		p := binary.BigEndian.AppendUint16(nil, code)
		return append(p, reason...)
	}
	for _, tc := range []struct {
		name    string
		fin     bool
		op      ws.OpCode
		payload []byte
		want    protocol.CloseCode
	}{
		{"ping of 126 bytes", true, ws.OpPing, make([]byte, 126), protocol.CloseProtocolError},
		{"pong of 200 bytes", true, ws.OpPong, make([]byte, 200), protocol.CloseProtocolError},
		{"close of 126 bytes", true, ws.OpClose, closePayload(1000, strings.Repeat("r", 124)), protocol.CloseProtocolError},
		{"fragmented ping", false, ws.OpPing, []byte("x"), protocol.CloseProtocolError},
		{"close with one byte", true, ws.OpClose, []byte{3}, protocol.CloseProtocolError},
		{"close with a reserved code", true, ws.OpClose, closePayload(1005, ""), protocol.CloseProtocolError},
		{"close with an application code", true, ws.OpClose, closePayload(4321, "bye"), protocol.CloseNormal},
		{"close 1001", true, ws.OpClose, closePayload(1001, ""), protocol.CloseNormal},
		{"ping of 125 bytes, then a close", true, ws.OpPing, make([]byte, 125), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := authed(t, fmt.Sprintf("vac-%d", len(tc.name)*1000+int(tc.op)*10+len(tc.payload)%10))
			nextEvent(t, events) // connected
			writeFrame(t, c.nc, tc.fin, tc.op, tc.payload)
			if tc.want == 0 {
				// A valid ping is answered; the connection stays.
				c.send(ws.OpText, []byte(`{"type":"ping","id":"after"}`))
				if f, _ := c.next(); f.Type != protocol.TypePong || f.ID != "after" {
					t.Fatalf("frame %+v, want pong", f)
				}
				c.send(ws.OpClose, closePayload(4000, ""))
				tc.want = protocol.CloseNormal
			}
			if _, code := c.next(); code != tc.want {
				t.Fatalf("node closed with %d, want %d", code, tc.want)
			}
			ev := nextEvent(t, events)
			if tc.op == ws.OpClose && tc.want == protocol.CloseNormal {
				sent := protocol.CloseCode(binary.BigEndian.Uint16(tc.payload))
				if ev.Reason != "client_closed" || protocol.CloseCode(ev.Code) != sent {
					t.Fatalf("event %+v, want client_closed with the device's code %d", ev, sent)
				}
			}
		})
	}
}

// pushRecorder is a device's record of the pushes it got.
type pushRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *pushRecorder) onPush(p simulator.Push) (string, []byte) {
	r.mu.Lock()
	r.got = append(r.got, string(p.Data))
	r.mu.Unlock()
	return "", nil
}

func (r *pushRecorder) pushes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// A push whose reply subject is not under its service's inbox prefix is
// refused: not delivered, not answered (a vacuum app cannot have a node
// publish its receipt as a push to an aircon device, or into the aircon
// app's inbox), and counted.
func TestReplySubjectRefused(t *testing.T) {
	e := testenv.New(t)
	n := e.StartNode(testenv.FastConfig("n1"))
	var vac, air pushRecorder
	_, wv := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n.URL()}, OnPush: vac.onPush}, "vac-1")
	_, wa := e.Device(simulator.DeviceConfig{Service: "aircon", Nodes: []string{n.URL()}, OnPush: air.onPush}, "ac-1")

	// Something listening on each forbidden reply subject would see a
	// reply there.
	spy, err := e.NC.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	_ = e.NC.Flush()
	bad := []string{
		e.Subj.Device("aircon", "ac-1"), // a push to an aircon device
		e.Subj.Conn("aircon", wa.Conn),
		bus.InboxPrefix("aircon") + ".x.1", // the aircon app's inbox
		"_INBOX.x.1",                       // the default inbox: any app's
		bus.InboxPrefix("vacuum"),          // the prefix alone
		bus.InboxPrefix("vacuum") + "x.1",  // another service, vacuumx
		bus.InboxPrefix("vacuum") + ".*",   // a wildcard
	}
	for i, reply := range bad {
		m := &nats.Msg{Subject: e.Subj.Conn("vacuum", wv.Conn), Reply: reply, Data: []byte(fmt.Sprintf(`"evil-%d"`, i)),
			Header: nats.Header{bus.HeaderMsgID: {"evil"}}}
		if err := e.NC.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// Malformed pushes get no error reply on such a subject either.
	_ = e.NC.PublishMsg(&nats.Msg{Subject: e.Subj.Conn("vacuum", wv.Conn), Reply: e.Subj.Device("aircon", "ac-1"),
		Data: make([]byte, 300<<10)})
	// Pushes to one connection are delivered in order: once these are
	// acked, the refused ones would have arrived before them.
	for _, w := range []protocol.Frame{wv, wa} {
		if r, err := request(t, e.NC, e.Subj.Conn(w.Service, w.Conn), []byte(`"good"`), nil); err != nil || r.Status != bus.StatusAcked {
			t.Fatalf("good push to %s: %+v, %v", w.Service, r, err)
		}
	}
	if got := vac.pushes(); len(got) != 1 || got[0] != `"good"` {
		t.Fatalf("the vacuum device got %q, want only the good push", got)
	}
	if got := air.pushes(); len(got) != 1 || got[0] != `"good"` {
		t.Fatalf("the aircon device got %q, want only the good push", got)
	}
	if st := n.Stats(); st.ReplyRefused != int64(len(bad)+1) {
		t.Fatalf("ReplyRefused = %d, want %d", st.ReplyRefused, len(bad)+1)
	}
	for {
		m, err := spy.NextMsg(50 * time.Millisecond)
		if err != nil {
			break
		}
		var r bus.Reply
		if json.Unmarshal(m.Data, &r) != nil || r.Node == "" {
			continue // not a node's reply (the test's own pushes, takeovers)
		}
		for _, b := range bad[:4] {
			if m.Subject == b {
				t.Fatalf("the node published a reply on forbidden reply subject %s: %s", m.Subject, m.Data)
			}
		}
	}

	// An operator may allow more prefixes: then plain clients' default
	// inboxes work too.
	cfg := testenv.FastConfig("n2")
	cfg.ReplyPrefixes = []string{node.DefaultReplyPrefix, "_INBOX."}
	n2 := e.StartNode(cfg)
	_, w2 := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n2.URL()}}, "vac-2")
	resp, err := e.NC.Request(e.Subj.Conn("vacuum", w2.Conn), []byte(`1`), 5*time.Second)
	if err != nil {
		t.Fatalf("request with an _INBOX. reply on a node that allows it: %v", err)
	}
	var r bus.Reply
	if err := json.Unmarshal(resp.Data, &r); err != nil || r.Status != bus.StatusAcked {
		t.Fatalf("reply %s, %v", resp.Data, err)
	}
}

// Every frame but an ack takes a token of the connection's bucket: over
// it, the frame is dropped and answered rate_limited, and the connection
// stays.
func TestUpstreamRateLimit(t *testing.T) {
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.UpstreamRate, cfg.UpstreamBurst = 1, 5
	n := e.StartNode(cfg)
	up, err := e.NC.SubscribeSync(e.Subj.Upstream("vacuum"))
	if err != nil {
		t.Fatal(err)
	}
	_ = e.NC.Flush()
	c := dialRaw(t, n.URL(), http.Header{"Authorization": {"Bearer " + e.Token("vacuum", "vac-1", token.IssueOptions{})}})
	w, _ := c.next()
	if w.Type != protocol.TypeWelcome {
		t.Fatalf("frame %+v", w)
	}
	const sent = 40
	start := time.Now()
	for i := range sent {
		c.send(ws.OpText, fmt.Appendf(nil, `{"type":"msg","id":"m%d","data":%d}`, i, i))
	}
	acked, limited := 0, 0
	for range sent {
		f, code := c.next()
		switch {
		case f.Type == protocol.TypeAck:
			acked++
		case f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited:
			limited++
		default:
			t.Fatalf("frame %+v close %d", f, code)
		}
	}
	// The burst, plus what the rate refilled while they were read.
	most := 5 + int(time.Since(start).Seconds()) + 1
	if limited == 0 || acked > most || acked+limited != sent {
		t.Fatalf("%d acked, %d limited of %d; at most %d may pass", acked, limited, sent, most)
	}
	if st := n.Stats(); st.RateLimited != int64(limited) || st.Upstream != int64(acked) {
		t.Fatalf("stats: RateLimited %d, Upstream %d; the device saw %d limited, %d acked", st.RateLimited, st.Upstream, limited, acked)
	}
	for range acked {
		if _, err := up.NextMsg(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if m, err := up.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("a limited message reached the app: %s", m.Data)
	}
	// Acks are not limited: a push is still acked.
	go func() {
		for {
			f, code := c.next()
			if code != 0 {
				return
			}
			if f.Type == protocol.TypePush {
				c.send(ws.OpText, fmt.Appendf(nil, `{"type":"ack","id":%q}`, f.ID))
			}
		}
	}()
	if r, err := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`1`), nil); err != nil || r.Status != bus.StatusAcked {
		t.Fatalf("push after the limit: %+v, %v", r, err)
	}
}

// Per-address limits: connections not yet authenticated, connections in
// all, and the rate of new ones; over any, 429 and a close.
func TestPerAddressLimits(t *testing.T) {
	e := testenv.New(t)
	start := func(mod func(*node.Config)) *node.Node {
		cfg := testenv.FastConfig("n-" + t.Name())
		cfg.ID = "n1"
		cfg.AddressLimitsExempt = []string{} // the test's devices are on loopback
		mod(&cfg)
		return e.StartNode(cfg)
	}
	tooMany := func(t *testing.T, n *node.Node) bool {
		t.Helper()
		status, _ := rawRequest(t, hostPort(t, n.URL()), upgradeRequest("/ws"))
		return strings.HasPrefix(status, "HTTP/1.1 429")
	}
	idle := func(t *testing.T, n *node.Node) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", hostPort(t, n.URL()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("unauthenticated", func(t *testing.T) {
		n := start(func(c *node.Config) { c.MaxUnauthenticatedPerAddress = 3 })
		var held []net.Conn
		for range 3 {
			held = append(held, idle(t, n))
		}
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if n.Stats().Accepted < 3 {
				return errors.New("not accepted yet")
			}
			return nil
		})
		if !tooMany(t, n) {
			t.Fatal("a 4th unauthenticated connection was not refused")
		}
		// An authenticated device is not one of them any more.
		_, _ = e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n.URL()}}, "vac-1")
		_ = held[0].Close()
		testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			if tooMany(t, n) {
				return errors.New("still refused after one closed")
			}
			return nil
		})
		if n.Stats().ConnLimited < 1 {
			t.Fatalf("ConnLimited = %d", n.Stats().ConnLimited)
		}
	})
	t.Run("connections", func(t *testing.T) {
		n := start(func(c *node.Config) { c.MaxConnsPerAddress = 2 })
		_, _ = e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n.URL()}}, "vac-1")
		_, _ = e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n.URL()}}, "vac-2")
		if !tooMany(t, n) {
			t.Fatal("a 3rd connection was not refused")
		}
	})
	t.Run("rate", func(t *testing.T) {
		// One new connection per 100s after a burst of 3: the 4th is
		// refused however slow the machine.
		n := start(func(c *node.Config) { c.ConnRatePerAddress, c.ConnBurstPerAddress = 0.01, 3 })
		for i := range 3 {
			if tooMany(t, n) {
				t.Fatalf("connection %d refused within the burst", i+1)
			}
		}
		if !tooMany(t, n) {
			t.Fatal("a 4th connection within the burst was not refused")
		}
	})
	t.Run("exempt networks", func(t *testing.T) {
		n := start(func(c *node.Config) {
			c.ConnRatePerAddress, c.ConnBurstPerAddress = 0.01, 1
			c.AddressLimitsExempt = []string{"127.0.0.0/8"}
		})
		for i := range 3 {
			if tooMany(t, n) {
				t.Fatalf("connection %d from an exempt address refused", i+1)
			}
		}
	})
}

// Tokens with more groups than tokens.max_groups, or longer than
// tokens.max_bytes, are refused with bad_token, however well signed.
func TestTokenBounds(t *testing.T) {
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	n := e.StartNode(cfg)
	big, err := token.NewKeyring(map[string][]token.Key{"vacuum": {{ID: "vacuum-test", HMACSecret: testenv.Services["vacuum"]}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := big.SetLimits(token.Limits{MaxGroups: 100_000, MaxBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	groups := func(k, size int) []string {
		g := make([]string, k)
		for i := range g {
			g[i] = fmt.Sprintf("g%0*d", size-1, i)
		}
		return g
	}
	for _, tc := range []struct {
		name   string
		groups []string
	}{
		{"33 groups", groups(33, 4)},
		{"over 4 KiB", groups(30, 128)},
		{"50,000 groups", groups(50_000, 6)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := big.Issue("vacuum", "vac-1", token.IssueOptions{Groups: tc.groups})
			if err != nil {
				t.Fatal(err)
			}
			c := dialRaw(t, n.URL(), nil)
			frame, _ := json.Marshal(map[string]string{"type": "auth", "token": tok})
			if len(frame) > 60<<10 {
				// Past max_frame_bytes: the frame itself is refused first,
				// at its header (so the rest may not be written).
				_ = ws.WriteFrame(c.nc, ws.MaskFrameInPlace(ws.NewFrame(ws.OpText, true, frame)))
				// The node answers too_big and closes with unread input, so
				// the device may see a reset before the frames.
				if f, code := c.next(); f.Code != protocol.ErrTooBig && code != protocol.CloseTooBig && code != 1006 {
					t.Fatalf("frame %+v close %d, want too_big", f, code)
				}
				return
			}
			c.send(ws.OpText, frame)
			c.expectClose(protocol.ErrBadToken, protocol.CloseBadToken)
		})
	}
	if st := n.Stats(); st.Subscriptions != 0 || st.Connections != 0 {
		t.Fatalf("after refused tokens: %d subscriptions, %d connections", st.Subscriptions, st.Connections)
	}
	// 32 groups are fine.
	tok, err := e.Keys.Issue("vacuum", "vac-2", token.IssueOptions{Groups: groups(32, 4)})
	if err != nil {
		t.Fatal(err)
	}
	if _, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n.URL()}}, "vac-2"); len(w.Groups) != 32 {
		t.Fatalf("welcome %+v", w)
	}
}

// A revocation closes the live connections it denies with 4006 and refuses
// their tokens from then on; tokens issued after a device's revocation
// work.
func TestRevocation(t *testing.T) {
	e := testenv.New(t)
	n := e.StartNode(testenv.FastConfig("n1"))
	type dev struct {
		closed chan protocol.CloseCode
		w      protocol.Frame
	}
	connect := func(service, device, tok string) dev {
		d := dev{closed: make(chan protocol.CloseCode, 4)}
		_, d.w = e.Device(simulator.DeviceConfig{Service: service, Token: tok, Nodes: []string{n.URL()},
			OnClose: func(code protocol.CloseCode, _ string) { d.closed <- code }}, device)
		return d
	}
	wantClosed := func(t *testing.T, d dev, want protocol.CloseCode) {
		t.Helper()
		select {
		case code := <-d.closed:
			if code != want {
				t.Fatalf("closed with %d, want %d", code, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("not closed")
		}
	}
	refused := func(t *testing.T, tok string) {
		t.Helper()
		c := dialRaw(t, n.URL(), http.Header{"Authorization": {"Bearer " + tok}})
		c.expectClose(protocol.ErrRevoked, protocol.CloseRevoked)
	}

	t.Run("device", func(t *testing.T) {
		old := e.Token("vacuum", "vac-1", token.IssueOptions{})
		d := connect("vacuum", "vac-1", old)
		other := connect("aircon", "vac-1", "") // same device name, another service
		if k := n.Revoke(token.Revocation{Service: "vacuum", Device: "vac-1", NotBefore: time.Now().Add(time.Second), Until: time.Now().Add(time.Hour)}); k != 1 {
			t.Fatalf("Revoke closed %d connections, want 1", k)
		}
		wantClosed(t, d, protocol.CloseRevoked)
		refused(t, old)
		if r, err := request(t, e.NC, e.Subj.Conn("aircon", other.w.Conn), []byte(`1`), nil); err != nil || r.Status != bus.StatusAcked {
			t.Fatalf("the aircon device of the same name: %+v, %v", r, err)
		}
		// A token whose chain began after the revocation works.
		later := testenv.Keys(t)
		later.SetClock(func() time.Time { return time.Now().Add(2 * time.Second) })
		fresh, _ := later.Issue("vacuum", "vac-1", token.IssueOptions{})
		connect("vacuum", "vac-1", fresh)
	})
	t.Run("token ID", func(t *testing.T) {
		tok := e.Token("vacuum", "vac-2", token.IssueOptions{ID: "tok-2"})
		d := connect("vacuum", "vac-2", tok)
		other := connect("vacuum", "vac-2b", e.Token("vacuum", "vac-2b", token.IssueOptions{}))
		n.Revoke(token.Revocation{Service: "vacuum", TokenID: "tok-2", Until: time.Now().Add(time.Hour)})
		wantClosed(t, d, protocol.CloseRevoked)
		refused(t, tok)
		if r, err := request(t, e.NC, e.Subj.Conn("vacuum", other.w.Conn), []byte(`1`), nil); err != nil || r.Status != bus.StatusAcked {
			t.Fatalf("another token: %+v, %v", r, err)
		}
	})
	t.Run("announced on NATS", func(t *testing.T) {
		d := connect("vacuum", "vac-3", "")
		if err := bus.PublishRevocation(e.NC, e.Subj, bus.Revocation{Service: "vacuum", Device: "vac-3",
			NotBefore: time.Now().Add(time.Second), Until: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		wantClosed(t, d, protocol.CloseRevoked)
	})
	if st := n.Stats(); st.Revoked < 5 {
		t.Fatalf("Revoked = %d, want at least 5", st.Revoked)
	}
}

// A node serves wss:// with a certificate it reads again when its files
// change, and may ask devices for client certificates (bound to their
// device ID).
func TestWSS(t *testing.T) {
	e := testenv.New(t)
	ca := certstest.NewCA(t, "test")
	srv := ca.Server("node", "127.0.0.1", "localhost")
	cfg := testenv.FastConfig("n1")
	cfg.TLS = node.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile}
	n := e.StartNode(cfg)
	if !strings.HasPrefix(n.URL(), "wss://127.0.0.1:") {
		t.Fatalf("URL %s, want wss://", n.URL())
	}
	tc := &tls.Config{RootCAs: ca.Pool()}
	_, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n.URL()}, TLSConfig: tc}, "vac-1")
	if r, err := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`{"over":"tls"}`), nil); err != nil || r.Status != bus.StatusAcked {
		t.Fatalf("push over wss: %+v, %v", r, err)
	}
	// Plain ws:// to a TLS port does not upgrade.
	if _, _, _, err := (ws.Dialer{}).Dial(context.Background(), strings.Replace(n.URL(), "wss://", "ws://", 1)); err == nil {
		t.Fatal("a plain ws:// handshake succeeded on the TLS port")
	}

	// A renewed certificate (another CA, same files) is served without a
	// restart; the device connected before stays.
	ca2 := certstest.NewCA(t, "renewed")
	renewed := ca2.Server("node", "127.0.0.1")
	for _, f := range [][2]string{{renewed.CertFile, srv.CertFile}, {renewed.KeyFile, srv.KeyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1]+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f[1]+".new", f[1]); err != nil {
			t.Fatal(err)
		}
	}
	testutil.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		c, err := tls.Dial("tcp", hostPort(t, n.URL()), &tls.Config{RootCAs: ca2.Pool()})
		if err != nil {
			return fmt.Errorf("the renewed certificate is not served yet: %w", err)
		}
		return c.Close()
	})
	if r, err := request(t, e.NC, e.Subj.Conn("vacuum", w.Conn), []byte(`2`), nil); err != nil || r.Status != bus.StatusAcked {
		t.Fatalf("push to the device connected before the renewal: %+v, %v", r, err)
	}

	t.Run("client certificates", func(t *testing.T) {
		devCA := certstest.NewCA(t, "devices")
		cfg := testenv.FastConfig("n2")
		cfg.TLS = node.TLSConfig{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: devCA.File,
			ClientAuth: node.ClientAuthRequire, BindDevice: true}
		n2 := e.StartNode(cfg)
		roots := &tls.Config{RootCAs: ca2.Pool()}
		// No certificate: the TLS handshake fails.
		if _, _, _, err := (ws.Dialer{TLSConfig: roots}).Dial(context.Background(), n2.URL()); err == nil {
			t.Fatal("a device without a client certificate was let in")
		}
		withCert := func(cn string) *tls.Config {
			return &tls.Config{RootCAs: ca2.Pool(), Certificates: []tls.Certificate{devCA.Client(cn).TLS(t)}}
		}
		_, w := e.Device(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n2.URL()}, TLSConfig: withCert("vac-7")}, "vac-7")
		if w.Device != "vac-7" {
			t.Fatalf("welcome %+v", w)
		}
		// The certificate of another device: forbidden.
		closed := make(chan protocol.CloseCode, 1)
		d, err := simulator.NewDevice(simulator.DeviceConfig{Service: "vacuum", Nodes: []string{n2.URL()}, TLSConfig: withCert("vac-8"),
			Token: e.Token("vacuum", "vac-9", token.IssueOptions{}), OnClose: func(c protocol.CloseCode, _ string) {
				select {
				case closed <- c:
				default:
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Run(ctx); err == nil {
			t.Fatal("a device with another device's certificate ran")
		}
		if c := <-closed; c != protocol.CloseForbidden {
			t.Fatalf("closed with %d, want forbidden", c)
		}
	})
}

// TestConfigValidateSecurity checks the security keys' errors name them.
func TestConfigValidateSecurity(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*node.Config)
		want string
	}{
		{func(c *node.Config) { c.MaxHandshakeLineBytes = 100 }, "node.max_handshake_line_bytes"},
		{func(c *node.Config) { c.MaxHandshakeLineBytes, c.MaxHandshakeBytes = 8192, 4096 }, "node.max_handshake_bytes"},
		{func(c *node.Config) { c.AddressLimitsExempt = []string{"10.0.0.1"} }, "node.address_limits_exempt[0]"},
		{func(c *node.Config) { c.ReplyPrefixes = []string{"_INBOX.>"} }, "node.reply_prefixes[0]"},
		{func(c *node.Config) { c.ReplyPrefixes = []string{"_INBOX_{service}x."} }, "node.reply_prefixes[0]"},
		{func(c *node.Config) { c.ReplyPrefixes = []string{"_INBOX"} }, "node.reply_prefixes[0]"},
		{func(c *node.Config) { c.TLS.CertFile = "x" }, "node.tls"},
		{func(c *node.Config) { c.TLS.ClientAuth = "maybe" }, "node.tls.client_auth"},
		{func(c *node.Config) { c.TLS.BindDevice = true }, "node.tls.bind_device"},
		{func(c *node.Config) { c.TLS = node.TLSConfig{CertFile: "c", KeyFile: "k"}; c.PublicURL = "ws://x/ws" }, "node.public_url"},
	} {
		cfg := testenv.FastConfig("n1")
		tc.mod(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
	// A reply prefix under the subject prefix would let replies reach
	// tether's own subjects.
	e := testenv.New(t)
	cfg := testenv.FastConfig("n1")
	cfg.ReplyPrefixes = []string{"tether.svc.{service}."}
	if _, err := node.New(cfg, node.Deps{NATS: e.NC, Keys: e.Keys}); err == nil || !strings.Contains(err.Error(), "node.reply_prefixes[0]") {
		t.Fatalf("New with a reply prefix under tether.: %v", err)
	}
}

// node.extra_cluster_secrets lets a cluster rotate its secret: a node
// accepts takeovers signed with any of its secrets, and signs with its
// current one only.
func TestClusterSecretRotation(t *testing.T) {
	e := testenv.New(t)
	const oldSecret, newSecret = "old-cluster-secret-0123456789", "new-cluster-secret-0123456789"
	c1 := testenv.FastConfig("n1")
	c1.ClusterSecret, c1.ExtraClusterSecrets = oldSecret, []string{newSecret}
	n1 := e.StartNode(c1)
	c2 := testenv.FastConfig("n2")
	c2.ClusterSecret = newSecret
	n2 := e.StartNode(c2)
	closed := make(chan protocol.CloseCode, 1)
	tok := e.Token("vacuum", "vac-1", token.IssueOptions{})
	e.Device(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n1.URL()},
		OnClose: func(c protocol.CloseCode, _ string) {
			select {
			case closed <- c:
			default:
			}
		}}, "vac-1")
	// The same device on n2, whose takeover is signed with the new secret.
	e.Device(simulator.DeviceConfig{Service: "vacuum", Token: tok, Nodes: []string{n2.URL()}}, "vac-1")
	select {
	case c := <-closed:
		if c != protocol.CloseReplaced {
			t.Fatalf("the older connection closed with %d, want replaced", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("n1 did not accept a takeover signed with its extra secret")
	}
	if n1.Stats().BadControl != 0 {
		t.Fatalf("n1 refused %d takeovers", n1.Stats().BadControl)
	}
}
