package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tetherhq/tether/protocol"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want protocol.Frame // zero Type: an error is expected
	}{
		{"auth", `{"type":"auth","token":"t","service":"vacuum"}`, protocol.Frame{Type: "auth", Token: "t", Service: "vacuum"}},
		{"ack with data", `{"type":"ack","id":"17","result":"busy","data":{"a":1}}`,
			protocol.Frame{Type: "ack", ID: "17", Result: "busy", Data: json.RawMessage(`{"a":1}`)}},
		{"unknown fields ignored", `{"type":"ping","id":"p1","future":[1,2]}`, protocol.Frame{Type: "ping", ID: "p1"}},
		{"unknown type is still a frame", `{"type":"nope"}`, protocol.Frame{Type: "nope"}},
		{"whitespace around", " \n{\"type\":\"pong\"}\t", protocol.Frame{Type: "pong"}},
		{"invalid UTF-8 in a string is replaced", "{\"type\":\"msg\",\"id\":\"a\xffb\"}", protocol.Frame{Type: "msg", ID: "a\uFFFDb"}},
		{"empty", ``, protocol.Frame{}},
		{"not JSON", `hello`, protocol.Frame{}},
		{"null", `null`, protocol.Frame{}},
		{"array", `[{"type":"auth"}]`, protocol.Frame{}},
		{"string", `"auth"`, protocol.Frame{}},
		{"no type", `{"token":"t"}`, protocol.Frame{}},
		{"empty type", `{"type":""}`, protocol.Frame{}},
		{"type not a string", `{"type":1}`, protocol.Frame{}},
		{"field of the wrong type", `{"type":"welcome","ping_ms":"soon"}`, protocol.Frame{}},
		{"truncated", `{"type":"auth","token":"t"`, protocol.Frame{}},
		{"trailing garbage", `{"type":"auth"} x`, protocol.Frame{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A dirty frame must be reset by Decode.
			f := protocol.Frame{Type: "stale", Token: "stale", Data: json.RawMessage(`1`)}
			err := protocol.Decode([]byte(tc.in), &f)
			if tc.want.Type == "" {
				if !errors.Is(err, protocol.ErrMalformed) {
					t.Fatalf("Decode(%q) = %v, want ErrMalformed", tc.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(f, tc.want) {
				t.Fatalf("Decode(%q) = %+v, want %+v", tc.in, f, tc.want)
			}
		})
	}
}

func TestPayload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		frame   string
		want    []byte
		wantErr bool
	}{
		{"JSON object", `{"type":"msg","data":{"temp":21}}`, []byte(`{"temp":21}`), false},
		{"JSON string", `{"type":"msg","data":"hi"}`, []byte(`"hi"`), false},
		{"JSON number", `{"type":"msg","data":1.5}`, []byte(`1.5`), false},
		{"no data", `{"type":"msg"}`, nil, false},
		{"null is the empty payload", `{"type":"msg","data":null}`, nil, false},
		{"null with base64", `{"type":"msg","enc":"base64","data":null}`, []byte{}, false},
		{"base64", `{"type":"msg","enc":"base64","data":"3q2+7w=="}`, []byte{0xde, 0xad, 0xbe, 0xef}, false},
		{"base64 empty", `{"type":"msg","enc":"base64","data":""}`, []byte{}, false},
		{"base64 bad", `{"type":"msg","enc":"base64","data":"!!!"}`, nil, true},
		{"base64 unpadded", `{"type":"msg","enc":"base64","data":"3q2+7w"}`, nil, true},
		{"base64 not a string", `{"type":"msg","enc":"base64","data":{"a":1}}`, nil, true},
		{"unknown enc", `{"type":"msg","enc":"hex","data":"00"}`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f protocol.Frame
			if err := protocol.Decode([]byte(tc.frame), &f); err != nil {
				t.Fatal(err)
			}
			got, err := f.Payload()
			if tc.wantErr {
				if !errors.Is(err, protocol.ErrMalformed) {
					t.Fatalf("Payload() = %q, %v; want ErrMalformed", got, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
				t.Fatalf("Payload() = %q (nil %v), %v; want %q (nil %v)", got, got == nil, err, tc.want, tc.want == nil)
			}
		})
	}
}

// interesting are strings that need care in JSON: quotes, escapes, control
// characters, HTML characters, JavaScript line terminators, invalid UTF-8.
var interesting = []string{
	"",
	"plain",
	`quote " backslash \ slash /`,
	"ctl \x00\x01\x07\b\f\n\r\t\x1f\x7f",
	"<script>&amp;</script>",
	"line\u2028para\u2029end",
	"émoji 🧹 日本",
	"bad \xff utf8 \xc3",
	"\xed\xa0\x80 surrogate half",
	"\xe2\x80 truncated U+2028",
	"\ufffd literal replacement",
}

// jsonString is what encoding/json makes of s: invalid UTF-8 bytes become
// U+FFFD one by one, as range over a string does.
func jsonString(s string) string { return string([]rune(s)) }

// wantPayload is what Payload returns for a frame built from data.
func wantPayload(data []byte) []byte {
	if len(data) == 0 {
		return nil
	}
	if json.Valid(data) && utf8.Valid(data) {
		data = bytes.TrimSpace(data)
		if string(data) == "null" {
			return nil
		}
	}
	return data
}

// decodeStrict decodes b as JSON into a Frame, failing the test unless b is
// one valid JSON object in valid UTF-8 (a WebSocket text frame must be).
func decodeStrict(t testing.TB, b []byte) protocol.Frame {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("not valid JSON: %q", b)
	}
	if !utf8.Valid(b) {
		t.Fatalf("not valid UTF-8 (cannot go in a text frame): %q", b)
	}
	var f protocol.Frame
	if err := protocol.Decode(b, &f); err != nil {
		t.Fatalf("Decode(%q): %v", b, err)
	}
	// encoding/json itself agrees, field by field.
	var g protocol.Frame
	if err := json.Unmarshal(b, &g); err != nil || !reflect.DeepEqual(f, g) {
		t.Fatalf("json.Unmarshal(%q) = %+v, %v; Decode gave %+v", b, g, err, f)
	}
	return f
}

func checkPayload(t testing.TB, f protocol.Frame, data []byte) {
	t.Helper()
	got, err := f.Payload()
	if err != nil {
		t.Fatalf("Payload of %+v: %v", f, err)
	}
	if want := wantPayload(data); !bytes.Equal(got, want) {
		t.Fatalf("Payload = %q, want %q (frame %+v)", got, want, f)
	}
	if len(data) > 0 && !(json.Valid(data) && utf8.Valid(data)) && f.Enc != protocol.EncBase64 {
		t.Fatalf("data %q is not JSON in UTF-8 but was sent without enc base64: %+v", data, f)
	}
}

var payloads = [][]byte{
	nil,
	{},
	[]byte(`{"cmd":"start"}`),
	[]byte("  {\"a\": [1, 2]}\n"),
	[]byte(`"a string"`),
	[]byte(`42`),
	[]byte(`null`),
	[]byte(`true`),
	[]byte(`plain text`),
	{0xde, 0xad, 0xbe, 0xef},
	[]byte("\"bad \xff utf8 in a JSON string\""),
	[]byte(`{"a":1}{"b":2}`),
	[]byte(" "),
	[]byte("{\"line\":\"\u2028\"}"),
}

func TestAppendPush(t *testing.T) {
	for _, msgID := range interesting {
		for _, data := range payloads {
			for _, noAck := range []bool{false, true} {
				prefix := []byte("keep")
				b := protocol.AppendPush(prefix, math.MaxUint64, msgID, data, noAck)
				if !bytes.HasPrefix(b, []byte("keep")) {
					t.Fatalf("AppendPush overwrote dst: %q", b)
				}
				f := decodeStrict(t, b[4:])
				if f.Type != protocol.TypePush || f.ID != "18446744073709551615" || f.MsgID != jsonString(msgID) || f.NoAck != noAck {
					t.Fatalf("AppendPush(%q, %q, %v) decodes to %+v", msgID, data, noAck, f)
				}
				checkPayload(t, f, data)
			}
		}
	}
}

func TestAppendMsgAndAck(t *testing.T) {
	for _, s := range interesting {
		for _, data := range payloads {
			f := decodeStrict(t, protocol.AppendMsg(nil, s, data))
			if f.Type != protocol.TypeMsg || f.ID != jsonString(s) {
				t.Fatalf("AppendMsg(%q, %q) decodes to %+v", s, data, f)
			}
			checkPayload(t, f, data)

			f = decodeStrict(t, protocol.AppendAck(nil, "17", s, data))
			if f.Type != protocol.TypeAck || f.ID != "17" || f.Result != jsonString(s) {
				t.Fatalf("AppendAck(17, %q, %q) decodes to %+v", s, data, f)
			}
			if len(data) == 0 && f.Data != nil {
				t.Fatalf("AppendAck without data sent data: %+v", f)
			}
			checkPayload(t, f, data)
		}
	}
	// An ack's id is always there, even empty (it is required).
	if b := protocol.AppendAck(nil, "", "", nil); string(b) != `{"type":"ack","id":""}` {
		t.Fatalf("AppendAck empty = %s", b)
	}
}

func TestAppendOtherFrames(t *testing.T) {
	for _, s := range interesting {
		w := protocol.Welcome{Conn: s, Service: s + "svc", Device: s + "dev", Node: s + "node", Tier: s,
			Groups: []string{s, "g2"}, PingMS: 25000, MaxFrame: 65536}
		f := decodeStrict(t, protocol.AppendWelcome(nil, w))
		want := protocol.Frame{Type: protocol.TypeWelcome, Conn: jsonString(s), Service: jsonString(s + "svc"),
			Device: jsonString(s + "dev"), Node: jsonString(s + "node"), Tier: jsonString(s),
			Groups: []string{jsonString(s), "g2"}, PingMS: 25000, MaxFrame: 65536}
		if !reflect.DeepEqual(f, want) {
			t.Fatalf("AppendWelcome(%+v) decodes to %+v, want %+v", w, f, want)
		}

		f = decodeStrict(t, protocol.AppendError(nil, s+"code", s, s))
		want = protocol.Frame{Type: protocol.TypeError, Code: jsonString(s + "code"), Message: jsonString(s), ID: jsonString(s)}
		if !reflect.DeepEqual(f, want) {
			t.Fatalf("AppendError(%q) decodes to %+v, want %+v", s, f, want)
		}

		f = decodeStrict(t, protocol.AppendReconnect(nil, s, math.MaxInt64))
		want = protocol.Frame{Type: protocol.TypeReconnect, Reason: jsonString(s), AfterMS: math.MaxInt64}
		if !reflect.DeepEqual(f, want) {
			t.Fatalf("AppendReconnect(%q) decodes to %+v, want %+v", s, f, want)
		}

		f = decodeStrict(t, protocol.AppendPong(nil, s))
		want = protocol.Frame{Type: protocol.TypePong, ID: jsonString(s)}
		if !reflect.DeepEqual(f, want) {
			t.Fatalf("AppendPong(%q) decodes to %+v, want %+v", s, f, want)
		}

		f = decodeStrict(t, protocol.AppendAuth(nil, s+"tok", s))
		want = protocol.Frame{Type: protocol.TypeAuth, Token: jsonString(s + "tok"), Service: jsonString(s)}
		if !reflect.DeepEqual(f, want) {
			t.Fatalf("AppendAuth(%q) decodes to %+v, want %+v", s, f, want)
		}
	}

	// Optional parts are left out, not sent empty.
	for _, tc := range []struct{ got, want string }{
		{string(protocol.AppendWelcome(nil, protocol.Welcome{Conn: "n1.a", Service: "s", Device: "d", Node: "n1"})),
			`{"type":"welcome","conn":"n1.a","service":"s","device":"d","node":"n1","ping_ms":0,"max_frame":0}`},
		{string(protocol.AppendError(nil, "bad_frame", "", "")), `{"type":"error","code":"bad_frame"}`},
		{string(protocol.AppendPong(nil, "")), `{"type":"pong"}`},
		{string(protocol.AppendAuth(nil, "t", "")), `{"type":"auth","token":"t"}`},
		{string(protocol.AppendMsg(nil, "", nil)), `{"type":"msg","data":null}`},
		{string(protocol.AppendPush(nil, 7, "", []byte{1}, false)), `{"type":"push","id":"7","enc":"base64","data":"AQ=="}`},
		{string(protocol.AppendReconnect(nil, "shutdown", 1200)), `{"type":"reconnect","reason":"shutdown","after_ms":1200}`},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}

// TestInvalidUTF8JSONDataGoesBase64 pins a fix: json.Valid accepts invalid
// UTF-8 inside strings, and such data was embedded as is, making the frame
// an invalid text frame (the node closes a device that sends one with 1007).
func TestInvalidUTF8JSONDataGoesBase64(t *testing.T) {
	data := []byte("{\"name\":\"\xff\"}")
	if !json.Valid(data) {
		t.Fatal("json.Valid no longer accepts invalid UTF-8; this test needs another input")
	}
	for _, b := range [][]byte{
		protocol.AppendPush(nil, 1, "", data, false),
		protocol.AppendMsg(nil, "", data),
		protocol.AppendAck(nil, "1", "", data),
	} {
		f := decodeStrict(t, b)
		if f.Enc != protocol.EncBase64 {
			t.Fatalf("%s: want enc base64", b)
		}
		if got, _ := f.Payload(); !bytes.Equal(got, data) {
			t.Fatalf("payload = %q, want %q", got, data)
		}
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range interesting {
		checkAppendString(t, s)
	}
	// Exact bytes for the escapes browsers and JavaScript care about.
	for in, want := range map[string]string{
		"<&>":          `"\u003c\u0026\u003e"`,
		"\u2028\u2029": `"\u2028\u2029"`,
		"\x00\x1f":     `"\u0000\u001f"`,
		"\n\r\t":       `"\n\r\t"`,
		"\xff":         `"\ufffd"`,
		`"\`:           `"\"\\"`,
		"\x7f":         "\"\x7f\"",
	} {
		if got := string(protocol.AppendString(nil, in)); got != want {
			t.Errorf("AppendString(%q) = %s, want %s", in, got, want)
		}
	}
}

// checkAppendString checks AppendString(s) against encoding/json: valid
// JSON in valid UTF-8, decoding to what json.Marshal's output decodes to,
// and as safe to embed in HTML and JavaScript.
func checkAppendString(t testing.TB, s string) {
	t.Helper()
	b := protocol.AppendString([]byte("x"), s)
	if b[0] != 'x' {
		t.Fatalf("AppendString overwrote dst")
	}
	b = b[1:]
	if !json.Valid(b) || !utf8.Valid(b) {
		t.Fatalf("AppendString(%q) = %q: not valid JSON in UTF-8", s, b)
	}
	var got string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("AppendString(%q) = %q: %v", s, b, err)
	}
	std, _ := json.Marshal(s)
	var want string
	if err := json.Unmarshal(std, &want); err != nil {
		t.Fatal(err)
	}
	if got != want || got != jsonString(s) {
		t.Fatalf("AppendString(%q) decodes to %q; encoding/json gives %q", s, got, want)
	}
	for i := 0; i < len(b); i++ {
		if c := b[i]; c < 0x20 || c == '<' || c == '>' || c == '&' {
			t.Fatalf("AppendString(%q) = %q: raw %q at %d", s, b, c, i)
		}
	}
	if strings.ContainsAny(string(b), "\u2028\u2029") {
		t.Fatalf("AppendString(%q) = %q: raw U+2028/U+2029", s, b)
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 4096)
	w := protocol.Welcome{Conn: "n1.abc", Service: "vacuum", Device: "vac-1", Node: "n1", Tier: "paid",
		Groups: []string{"floor-1", "floor-2"}, PingMS: 25000, MaxFrame: 65536}
	allocs := testing.AllocsPerRun(100, func() {
		buf = protocol.AppendString(buf[:0], "bad \xff <utf8> \u2028 \n")
		buf = protocol.AppendWelcome(buf[:0], w)
		buf = protocol.AppendError(buf[:0], protocol.ErrUnknownAck, "no push awaits", "17")
		buf = protocol.AppendReconnect(buf[:0], "shutdown", 1200)
		buf = protocol.AppendPush(buf[:0], 17, "m-1", []byte(`{"cmd":"start"}`), false)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range interesting {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkAppendString(t, s)
	})
}

// FuzzDecodeFrame decodes arbitrary bytes (it must never panic), and
// re-encodes whatever it accepted with every Append function: the output
// must always decode back to the same fields.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"auth","token":"t","service":"vacuum"}`,
		`{"type":"welcome","conn":"n1.a","service":"s","device":"d","node":"n1","tier":"paid","groups":["g","h"],"ping_ms":25000,"max_frame":65536}`,
		`{"type":"push","id":"17","msg_id":"m-1","data":{"cmd":"start"},"no_ack":true}`,
		`{"type":"msg","enc":"base64","data":"3q2+7w=="}`,
		`{"type":"ack","id":"17","result":"ok","data":null}`,
		`{"type":"reconnect","reason":"shutdown","after_ms":1200}`,
		`{"type":"error","code":"bad_frame","message":"\u2028<>","id":"x"}`,
		"{\"type\":\"pong\",\"id\":\"\xff\"}",
		`{"type":1}`, `null`, `[]`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr protocol.Frame
		if err := protocol.Decode(b, &fr); err != nil {
			if !errors.Is(err, protocol.ErrMalformed) {
				t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if fr.Type == "" {
			t.Fatal("Decode accepted a frame without a type")
		}
		data, err := fr.Payload()
		if err != nil {
			data = fr.Data // not a payload: send the raw bytes as data instead
		}

		g := decodeStrict(t, protocol.AppendMsg(nil, fr.ID, data))
		if g.ID != fr.ID {
			t.Fatalf("msg id %q became %q", fr.ID, g.ID)
		}
		checkPayload(t, g, data)

		g = decodeStrict(t, protocol.AppendPush(nil, uint64(len(b)), fr.MsgID, data, fr.NoAck))
		if g.MsgID != fr.MsgID || g.NoAck != fr.NoAck {
			t.Fatalf("push %+v became %+v", fr, g)
		}
		checkPayload(t, g, data)

		g = decodeStrict(t, protocol.AppendAck(nil, fr.ID, fr.Result, data))
		if g.ID != fr.ID || g.Result != fr.Result {
			t.Fatalf("ack %+v became %+v", fr, g)
		}
		checkPayload(t, g, data)

		var groups []string
		if len(fr.Groups) > 0 {
			groups = fr.Groups
		}
		w := protocol.Welcome{Conn: fr.Conn, Service: fr.Service, Device: fr.Device, Node: fr.Node, Tier: fr.Tier,
			Groups: groups, PingMS: fr.PingMS, MaxFrame: fr.MaxFrame}
		g = decodeStrict(t, protocol.AppendWelcome(nil, w))
		if g.Conn != w.Conn || g.Service != w.Service || g.Device != w.Device || g.Node != w.Node ||
			g.Tier != w.Tier || !reflect.DeepEqual(g.Groups, w.Groups) || g.PingMS != w.PingMS || g.MaxFrame != w.MaxFrame {
			t.Fatalf("welcome %+v became %+v", w, g)
		}

		g = decodeStrict(t, protocol.AppendError(nil, fr.Code, fr.Message, fr.ID))
		if g.Code != fr.Code || g.Message != fr.Message || g.ID != fr.ID {
			t.Fatalf("error %+v became %+v", fr, g)
		}
		g = decodeStrict(t, protocol.AppendReconnect(nil, fr.Reason, fr.AfterMS))
		if g.Reason != fr.Reason || g.AfterMS != fr.AfterMS {
			t.Fatalf("reconnect %+v became %+v", fr, g)
		}
		g = decodeStrict(t, protocol.AppendPong(nil, fr.ID))
		if g.ID != fr.ID {
			t.Fatalf("pong %+v became %+v", fr, g)
		}
		g = decodeStrict(t, protocol.AppendAuth(nil, fr.Token, fr.Service))
		if g.Token != fr.Token || g.Service != fr.Service {
			t.Fatalf("auth %+v became %+v", fr, g)
		}
	})
}

func TestScanPushAndAppendAckID(t *testing.T) {
	for _, tc := range []struct {
		frame []byte
		id    uint64
		noAck bool
		ok    bool
	}{
		{protocol.AppendPush(nil, 17, "", []byte(`{"cmd":"start"}`), false), 17, false, true},
		{protocol.AppendPush(nil, 18, "", []byte{0xff}, false), 18, false, true},
		{protocol.AppendPush(nil, 19, "", nil, true), 19, true, true},
		{protocol.AppendPush(nil, 20, "m-1", []byte(`1`), false), 0, false, false},
		{[]byte(`{"type":"push","id":"x1","data":1}`), 0, false, false},
		{[]byte(`{"type":"push","id":"21"}`), 0, false, false},
		{[]byte(`{"type":"push","id":"007","data":1}`), 0, false, false},
		{[]byte(`{"type":"push","id":"0","data":1}`), 0, false, true},
		{[]byte(`{"type":"push","id":"123456789012345678901","data":1}`), 0, false, false},
		{[]byte(`{"type":"welcome"}`), 0, false, false},
	} {
		id, noAck, ok := protocol.ScanPush(tc.frame)
		if id != tc.id || noAck != tc.noAck || ok != tc.ok {
			t.Errorf("ScanPush(%s) = %d %v %v, want %d %v %v", tc.frame, id, noAck, ok, tc.id, tc.noAck, tc.ok)
		}
	}
	if got, want := string(protocol.AppendAckID(nil, 42, "ok")), string(protocol.AppendAck(nil, "42", "ok", nil)); got != want {
		t.Errorf("AppendAckID = %s, want %s", got, want)
	}
}

// FuzzScanPush checks the fast path against the decoder: whatever ScanPush
// accepts, Decode reads the same way.
func FuzzScanPush(f *testing.F) {
	f.Add(protocol.AppendPush(nil, 7, "", []byte(`{"a":1}`), false))
	f.Add(protocol.AppendPush(nil, 8, "", nil, true))
	f.Add([]byte(`{"type":"push","id":"9","data":`))
	f.Add([]byte(`{"type":"push","id":"007","data":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, noAck, ok := protocol.ScanPush(b)
		if !ok {
			return
		}
		var fr protocol.Frame
		if err := protocol.Decode(b, &fr); err != nil {
			return // ScanPush reads a prefix; a broken tail is the reader's to find
		}
		if fr.Type != protocol.TypePush || fr.ID != strconv.FormatUint(id, 10) || fr.NoAck != noAck {
			t.Fatalf("ScanPush(%q) = %d %v; Decode: %+v", b, id, noAck, fr)
		}
	})
}
