package cli

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestNATSCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, w := io.Pipe()
	var stderr strings.Builder
	code := make(chan int, 1)
	go func() {
		code <- Main(ctx, []string{"nats", "--port", "0", "--http-port", "0"}, IO{Stdout: w, Stderr: &stderr, Getenv: func(string) string { return "" }})
		_ = w.Close()
	}()
	lines := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(r)
		if s.Scan() {
			lines <- s.Text()
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	var url string
	select {
	case url = <-lines:
	case <-time.After(10 * time.Second):
		t.Fatal("tether nats printed no URL")
	}
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":4222") {
		t.Fatalf("first line %q: want nats://127.0.0.1:<free port>", url)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	nc.Close()
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d, stderr %s", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tether nats did not stop on cancel")
	}
	if !strings.Contains(stderr.String(), "monitoring http://127.0.0.1:") {
		t.Errorf("stderr does not say where monitoring listens: %s", stderr.String())
	}
}

func TestNATSCommandUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--routes", "nats-route://127.0.0.1:1"},
		{"--port", "-1"},
		{"--http-port", "-2"},
		{"--user", "u"},
	} {
		var stderr strings.Builder
		got := Main(context.Background(), append([]string{"nats"}, args...), IO{Stdout: io.Discard, Stderr: &stderr, Getenv: func(string) string { return "" }})
		if got != 2 {
			t.Errorf("tether nats %v: exit %d, want 2 (%s)", args, got, stderr.String())
		}
	}
	if listenAddr("h", 0) != "h:0" || listenAddr("h", -1) != "" || listenAddr("h", 4222) != "h:4222" {
		t.Error("listenAddr mapping")
	}
}
