package node

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// headOf returns the lines of data before its first empty line, and
// whether there is one.
func headOf(data []byte) ([]string, bool) {
	var lines []string
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return lines, false
		}
		line := strings.TrimSuffix(string(data[:i]), "\r")
		if line == "" {
			return lines, true
		}
		lines = append(lines, line)
		data = data[i+1:]
	}
}

// FuzzHandshake: the handshake reader never lets a line over its limit or a
// head over its total through, says which limit was hit, and the upgrade
// answers every input with an HTTP status line without panicking.
func FuzzHandshake(f *testing.F) {
	const maxLine, maxTotal = 64, 256
	for _, s := range []string{
		"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		"GET /ws?token=" + strings.Repeat("a", 100) + " HTTP/1.1\r\n\r\n",
		"GET /ws HTTP/1.1\r\nX: " + strings.Repeat("b", 70) + "\r\n\r\n",
		"GET /ws HTTP/1.1\n" + strings.Repeat("X: y\n", 60) + "\n",
		"GET /ws HTTP/1.1\r\n\r\nframes after the head",
		"\r\n",
		"\n\n",
		strings.Repeat("\r", 300),
		"POST /ws HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(7))
	}
	n := &Node{cfg: Config{Path: "/ws", MaxHandshakeLineBytes: maxLine, MaxHandshakeBytes: maxTotal}}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		// The reader alone, read in chunks of any size.
		lr := newLimitedHandshake(bytes.NewReader(data), maxLine, maxTotal)
		buf := make([]byte, int(chunk)%32+1)
		var got []byte
		var err error
		for {
			var k int
			k, err = lr.Read(buf)
			got = append(got, buf[:k]...)
			if err != nil {
				break
			}
		}
		lines, complete := headOf(data)
		headLen := 0
		over := false
		for i, l := range lines {
			headLen += len(l) + 2
			if len(l) > maxLine {
				over = true
				if i == 0 && !errors.Is(err, errRequestLineTooLong) && headLen <= maxTotal+len(l) {
					t.Fatalf("request line of %d bytes: err %v", len(l), err)
				}
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			if over || (complete && len(got) > len(data)) {
				t.Fatalf("read a head with a line over %d: %q", maxLine, data)
			}
			if !lr.done && len(got) > maxTotal {
				t.Fatalf("read %d bytes of an unfinished head", len(got))
			}
		case errors.Is(err, errRequestLineTooLong), errors.Is(err, errHeaderTooLarge):
			if len(got) > maxTotal+1 {
				t.Fatalf("%d bytes passed before %v", len(got), err)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if lr.done {
			// What passed before the end of the head is within the limits.
			h, _ := headOf(got)
			total := 0
			for _, l := range h {
				total += len(l) + 1
				if len(l) > maxLine {
					t.Fatalf("line of %d bytes passed", len(l))
				}
			}
			if total > maxTotal {
				t.Fatalf("head of %d bytes passed", total)
			}
		}

		// The upgrade answers with a status line, whatever came.
		var out bytes.Buffer
		_, err = n.upgrade(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), &out})
		if out.Len() > 0 && !bytes.HasPrefix(out.Bytes(), []byte("HTTP/1.1 ")) {
			t.Fatalf("answer %q", out.Bytes())
		}
		if err == nil && !strings.HasPrefix(out.String(), "HTTP/1.1 101 ") {
			t.Fatalf("upgraded, answered %q", out.Bytes())
		}
	})
}
