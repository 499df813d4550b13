package bus_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tetherhq/tether/bus"
	"github.com/tetherhq/tether/bus/natsserver"
	"github.com/tetherhq/tether/bus/natsserver/natstest"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bus.Config
		want string // "" means valid; else a substring naming the key
	}{
		{"zero", bus.Config{}, ""},
		{"several URLs", bus.Config{URLs: []string{"nats://a:4222", "tls://b:4222", "ws://c:80"}}, ""},
		{"comma list", bus.Config{URLs: []string{"nats://a:4222, nats://b:4222"}}, ""},
		{"prefix", bus.Config{Prefix: "acme.tether"}, ""},
		{"user", bus.Config{User: "u", Password: "p"}, ""},
		{"creds", bus.Config{Creds: "/x.creds"}, ""},
		{"tls pair", bus.Config{TLS: bus.TLSConfig{CertFile: "c", KeyFile: "k", CAFile: "ca"}}, ""},
		{"empty URL", bus.Config{URLs: []string{""}}, "nats.urls"},
		{"empty in list", bus.Config{URLs: []string{"nats://a:4222,,nats://b:4222"}}, "nats.urls"},
		{"no scheme", bus.Config{URLs: []string{"127.0.0.1:4222"}}, "nats.urls"},
		{"bad prefix", bus.Config{Prefix: "a b"}, "nats.prefix"},
		{"wildcard prefix", bus.Config{Prefix: "tether.*"}, "nats.prefix"},
		{"creds and user", bus.Config{Creds: "/x.creds", User: "u"}, "nats.creds"},
		{"creds and token", bus.Config{Creds: "/x.creds", Token: "t"}, "nats.creds"},
		{"cert without key", bus.Config{TLS: bus.TLSConfig{CertFile: "c"}}, "nats.tls"},
		{"key without cert", bus.Config{TLS: bus.TLSConfig{KeyFile: "k"}}, "nats.tls"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
	if s, err := (bus.Config{Prefix: "acme.t"}).Subjects(); err != nil || s.All("x") != "acme.t.svc.x.all" {
		t.Errorf("Subjects() = %v, %v", s, err)
	}
}

// applied applies options to nats.go's defaults.
func applied(t *testing.T, opts []nats.Option) nats.Options {
	t.Helper()
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func TestOptions(t *testing.T) {
	o := applied(t, bus.Config{}.Options("tether-node-n1", nil))
	if o.Name != "tether-node-n1" || o.MaxReconnect != -1 || o.ReconnectBufSize != 8<<20 || o.User != "" || o.Token != "" {
		t.Fatalf("defaults: name %q, max reconnect %d, buffer %d, user %q, token %q", o.Name, o.MaxReconnect, o.ReconnectBufSize, o.User, o.Token)
	}
	o = applied(t, bus.Config{Name: "mine", User: "u", Password: "p", Token: "", ReconnectBufferBytes: -1}.Options("x", nil))
	if o.Name != "mine" || o.User != "u" || o.Password != "p" || o.ReconnectBufSize != -1 {
		t.Fatalf("set: name %q, user %q/%q, buffer %d", o.Name, o.User, o.Password, o.ReconnectBufSize)
	}
	if o := applied(t, bus.Config{Token: "tok"}.Options("x", nil)); o.Token != "tok" {
		t.Fatalf("token %q", o.Token)
	}

	// Reconnect delays: between half and all of base << attempts, capped at
	// max_reconnect_wait (default 1s; never below the base).
	for _, base := range []time.Duration{0, 10 * time.Millisecond, 250 * time.Millisecond, time.Hour} {
		o := applied(t, bus.Config{ReconnectWait: base}.Options("x", nil))
		if o.CustomReconnectDelayCB == nil {
			t.Fatal("no custom reconnect delay")
		}
		b := base
		if b <= 0 {
			b = 100 * time.Millisecond
		}
		limit := max(time.Second, b)
		for _, attempts := range []int{0, 1, 2, 5, 16, 17, 100, 1 << 20} {
			d := b << min(attempts, 16)
			if d > limit || d <= 0 {
				d = limit
			}
			for range 20 {
				got := o.CustomReconnectDelayCB(attempts)
				if got < d/2 || got > d {
					t.Fatalf("base %v, attempt %d: delay %v outside [%v, %v]", base, attempts, got, d/2, d)
				}
			}
		}
	}
}

// freePort returns a port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

func TestConnect(t *testing.T) {
	s := natstest.RunServer(t)
	nc, err := bus.Connect(context.Background(), bus.Config{URLs: []string{s.ClientURL()}}, "test-conn", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("round trip: %v, %v", m, err)
	}

	// An invalid configuration is refused before dialing.
	if _, err := bus.Connect(context.Background(), bus.Config{URLs: []string{"nowhere"}}, "x", nil); err == nil || !strings.Contains(err.Error(), "nats.urls") {
		t.Fatalf("Connect(bad config) = %v", err)
	}
}

func TestConnectRetriesUntilServerUp(t *testing.T) {
	port := freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := bus.Connect(context.Background(), bus.Config{URLs: []string{url}, ConnectTimeout: 10 * time.Second}, "x", nil)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Connect returned before any server was up: %v", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	s, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:" + strconv.Itoa(port)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Connect: %v", r.err)
		}
		r.nc.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("Connect did not connect once the server was up")
	}
}

func TestConnectGivesUp(t *testing.T) {
	url := "nats://127.0.0.1:" + strconv.Itoa(freePort(t))
	start := time.Now()
	_, err := bus.Connect(context.Background(), bus.Config{URLs: []string{url}, ConnectTimeout: 300 * time.Millisecond}, "x", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect to nothing = %v, want a deadline error", err)
	}
	// Never before the timeout; and it does give up (the upper bound is
	// loose: a busy machine is slow, a retry loop that never ends is not).
	if el := time.Since(start); el < 300*time.Millisecond || el > 20*time.Second {
		t.Fatalf("gave up after %v, want about 300ms", el)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	if _, err := bus.Connect(ctx, bus.Config{URLs: []string{url}}, "x", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect with a cancelled context = %v", err)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("cancel took %v", el)
	}
}

func TestConnectAuth(t *testing.T) {
	s, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", User: "app", Password: "s3cr@t"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	port := s.ClientURL()[strings.LastIndex(s.ClientURL(), ":")+1:]

	// A refused login fails at once (no retrying until the timeout) and
	// does not show the password.
	start := time.Now()
	bad := "nats://app:wr0ng-pa55@127.0.0.1:" + port
	_, err = bus.Connect(context.Background(), bus.Config{URLs: []string{bad}, ConnectTimeout: 60 * time.Second}, "x", nil)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("Connect with a wrong password = %v", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("a refused login took %v", time.Since(start))
	}
	if strings.Contains(err.Error(), "wr0ng") || !strings.Contains(err.Error(), "***@127.0.0.1:"+port) {
		t.Fatalf("error does not redact the URL: %v", err)
	}

	// Without credentials: refused too.
	if _, err := bus.Connect(context.Background(), bus.Config{URLs: []string{s.ClientURL()}}, "x", nil); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("Connect without credentials = %v", err)
	}
	// With them in the configuration: in.
	nc, err := bus.Connect(context.Background(), bus.Config{URLs: []string{s.ClientURL()}, User: "app", Password: "s3cr@t"}, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}
