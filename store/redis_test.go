package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/internal/certs/certstest"
	"github.com/tetherhq/tether/store"
	"github.com/tetherhq/tether/store/redistest"
	"github.com/tetherhq/tether/store/storetest"
)

func TestRedis(t *testing.T) {
	client := redistest.Client(t, redistest.Start(t))
	storetest.Run(t, func(t *testing.T) store.Store {
		prefix := redistest.Prefix(t)
		redistest.Cleanup(t, client, prefix)
		return store.NewRedis(client, prefix)
	})
}

// TestRedisCluster runs the suite on a one-node Redis Cluster, which refuses
// multi-key commands across slots just as a real one does: it checks the
// hash tags.
func TestRedisCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr()}})
	t.Cleanup(func() { client.Close() })
	storetest.Run(t, func(t *testing.T) store.Store {
		prefix := redistest.Prefix(t)
		redistest.Cleanup(t, client, prefix)
		return store.NewRedis(client, prefix)
	})
}

// TestRedisUnavailable stops Redis under a store, expects ErrUnavailable
// quickly, then restarts Redis and expects the store to work again.
func TestRedisUnavailable(t *testing.T) {
	srv := redistest.StartServer(t)
	client := redis.NewClient(&redis.Options{
		Addr:                  srv.Addr(),
		DialTimeout:           200 * time.Millisecond,
		ReadTimeout:           200 * time.Millisecond,
		WriteTimeout:          200 * time.Millisecond,
		MaxRetries:            -1,
		DialerRetries:         1,
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { client.Close() })
	s := store.NewRedis(client, redistest.Prefix(t))
	ctx := t.Context()
	node := store.Node{ID: "n1", URL: "ws://n1:18080/ws", State: store.StateActive}
	if err := s.PutNode(ctx, node); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	calls := map[string]func() error{
		"Ping":      func() error { return s.Ping(ctx) },
		"Version":   func() error { _, err := s.Version(ctx); return err },
		"Map":       func() error { _, err := s.Map(ctx); return err },
		"Node":      func() error { _, err := s.Node(ctx, "n1"); return err },
		"PutNode":   func() error { return s.PutNode(ctx, node) },
		"Heartbeat": func() error { return s.Heartbeat(ctx, "n1", store.Load{}, time.Now()) },
		"Assign":    func() error { return s.Assign(ctx, "vacuum", "free", "n1") },
		"PutClient": func() error { return s.PutClient(ctx, store.Client{ID: "d1", Service: "vacuum"}) },
		"Clients":   func() error { _, err := s.Clients(ctx, "", 10); return err },
		"AddConns": func() error {
			return s.AddConns(ctx, []store.Conn{{ID: "n1.a", Service: "vacuum", Device: "d1"}})
		},
		"ReapConns":  func() error { _, err := s.ReapConns(ctx, "n1"); return err },
		"ConnCounts": func() error { _, err := s.ConnCounts(ctx); return err },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with Redis down: error %v, want ErrUnavailable", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s with Redis down took %v", name, d)
		}
	}

	srv.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for err := s.Ping(ctx); err != nil; err = s.Ping(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("store still failing 5s after Redis came back: %v", err)
		}
	}
	// The restarted Redis is empty (no persistence in tests).
	if err := s.PutNode(ctx, node); err != nil {
		t.Fatalf("PutNode after restart: %v", err)
	}
	if n, err := s.Node(ctx, "n1"); err != nil || n.URL != node.URL {
		t.Fatalf("Node after restart = %+v, %v", n, err)
	}
}

// keyHook fails the test for any command that names a key outside prefix.
type keyHook struct {
	t      *testing.T
	prefix string
}

func (h keyHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h keyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.check(cmd)
		return next(ctx, cmd)
	}
}

func (h keyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.check(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h keyHook) check(cmd redis.Cmder) {
	args := cmd.Args()
	var keys []any
	switch strings.ToLower(cmd.Name()) {
	case "ping", "multi", "exec", "discard", "unwatch", "hello", "client", "select", "auth", "script", "cluster", "scan":
	case "watch":
		keys = args[1:]
	case "eval", "evalsha", "eval_ro", "evalsha_ro":
		n, _ := strconv.Atoi(fmt.Sprint(args[2]))
		keys = args[3 : 3+n]
	default:
		keys = args[1:2]
	}
	for _, k := range keys {
		if ks, _ := k.(string); !strings.HasPrefix(ks, h.prefix) {
			h.t.Errorf("%s touches key %v, outside prefix %q", cmd.Name(), k, h.prefix)
		}
	}
}

// TestRedisKeys checks that every key the store names, and every key it
// leaves behind, is under its prefix, and that the keys are the documented
// ones.
func TestRedisKeys(t *testing.T) {
	url := redistest.Start(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { client.Close() })
	prefix := redistest.Prefix(t)
	redistest.Cleanup(t, client, prefix)
	client.AddHook(keyHook{t, prefix})
	s := store.NewRedis(client, prefix)

	ctx := t.Context()
	steps := []error{
		s.PutNode(ctx, store.Node{ID: "n1", URL: "ws://n1/ws", State: store.StateActive}),
		s.Heartbeat(ctx, "n1", store.Load{Connections: 1}, time.Now()),
		s.PutService(ctx, "vacuum", "", []string{"paid"}),
		s.Assign(ctx, "vacuum", "free", "n1"),
		s.PutClient(ctx, store.Client{ID: "d1", Service: "vacuum"}),
		s.AddConns(ctx, []store.Conn{{ID: "n1.a", Service: "vacuum", Device: "d1"}}),
		s.Revoke(ctx, store.Revocation{Service: "vacuum", Device: "d1", NotBefore: time.Now(), Until: time.Now().Add(time.Hour)}),
	}
	_, err1 := s.SetAssignment(ctx, "vacuum", "paid", []string{"n1"}, 0)
	_, err2 := s.Map(ctx)
	_, err3 := s.Clients(ctx, "", 10)
	_, err4 := s.ConnCounts(ctx)
	_, err5 := s.ReapConns(ctx, "n2")
	_, err6 := s.Revocations(ctx, time.Now())
	if err := errors.Join(append(steps, err1, err2, err3, err4, err5, err6)...); err != nil {
		t.Fatal(err)
	}
	keys, err := redistest.Keys(ctx, client, prefix)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	var want []string
	for _, k := range []string{"{map}:version", "{map}:nodes", "{map}:beats", "{map}:services",
		"{clients}:data", "{clients}:ids", "conns:{n1}", "conn-nodes", "revocations"} {
		want = append(want, prefix+k)
	}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("keys under the prefix:\n got %q\nwant %q", keys, want)
	}
	if s.Prefix() != prefix {
		t.Fatalf("Prefix() = %q, want %q", s.Prefix(), prefix)
	}
}

func TestRedisCorruptRecord(t *testing.T) {
	client := redistest.Client(t, redistest.Start(t))
	prefix := redistest.Prefix(t)
	redistest.Cleanup(t, client, prefix)
	s := store.NewRedis(client, prefix)
	ctx := t.Context()
	if err := client.HSet(ctx, prefix+"{map}:nodes", "n1", "{not json").Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.Node(ctx, "n1")
	if err == nil || errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Node of a corrupt record: error %v, want a decoding error", err)
	}
	if _, err := s.Map(ctx); err == nil {
		t.Fatal("Map with a corrupt record did not fail")
	}
}

func TestOpenRedis(t *testing.T) {
	url := redistest.Start(t)
	ctx := t.Context()
	prefix := redistest.Prefix(t)
	redistest.Cleanup(t, redistest.Client(t, url), prefix)
	s, err := store.OpenRedis(ctx, store.RedisConfig{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutClient(ctx, store.Client{ID: "d1", Service: "vacuum"}); err != nil {
		t.Fatal(err)
	}
	if s.Prefix() != prefix {
		t.Fatalf("Prefix() = %q", s.Prefix())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping after Close succeeded: OpenRedis's store must own its client")
	}

	// Addrs and a dead server.
	srv := redistest.StartServer(t)
	s, err = store.OpenRedis(ctx, store.RedisConfig{Addrs: []string{srv.Addr()}, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	srv.Stop()
	start := time.Now()
	_, err = store.OpenRedis(ctx, store.RedisConfig{URL: srv.URL() + "?dial_timeout=200ms&max_retries=-1"})
	if !errors.Is(err, store.ErrUnavailable) || time.Since(start) > 5*time.Second {
		t.Fatalf("OpenRedis of a stopped server: error %v after %v, want ErrUnavailable", err, time.Since(start))
	}
	_, err = store.OpenRedis(ctx, store.RedisConfig{URL: "http://x"})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("OpenRedis of a bad config: %v, want ErrInvalid", err)
	}
}

func TestRedisConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  store.RedisConfig
		want string // substring of the error; "" = valid
	}{
		{"zero", store.RedisConfig{}, ""},
		{"url", store.RedisConfig{URL: "redis://u:p@h:6380/2"}, ""},
		{"tls url", store.RedisConfig{URL: "rediss://h:6380"}, ""},
		{"url options", store.RedisConfig{URL: "redis://h:1/0?dial_timeout=1s"}, ""},
		{"sentinel", store.RedisConfig{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "m", DB: 3}, ""},
		{"cluster", store.RedisConfig{Addrs: []string{"a:1", "b:2"}, Password: "x"}, ""},
		{"url scheme", store.RedisConfig{URL: "http://h:1"}, "store.redis.url: scheme"},
		{"url unparsable", store.RedisConfig{URL: "redis://h:1/x"}, "store.redis.url:"},
		{"url option", store.RedisConfig{URL: "redis://h:1/0?bogus=1"}, "store.redis.url:"},
		{"url and addrs", store.RedisConfig{URL: "redis://h:1", Addrs: []string{"h:1"}}, "store.redis.addrs:"},
		{"url and password", store.RedisConfig{URL: "redis://h:1", Password: "p"}, "store.redis.password:"},
		{"url and db", store.RedisConfig{URL: "redis://h:1", DB: 1}, "store.redis.db:"},
		{"sentinel without addrs", store.RedisConfig{MasterName: "m"}, "store.redis.addrs:"},
		{"addr", store.RedisConfig{Addrs: []string{"h:1", "nohost"}}, "store.redis.addrs[1]:"},
		{"addr without port", store.RedisConfig{Addrs: []string{"h:"}}, "store.redis.addrs[0]:"},
		{"db", store.RedisConfig{DB: -1}, "store.redis.db:"},
		{"cluster db", store.RedisConfig{Addrs: []string{"a:1", "b:2"}, DB: 1}, "store.redis.db:"},
		{"prefix", store.RedisConfig{Prefix: "a{b}"}, "store.redis.prefix:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestRedisSentinel runs the conformance suite through a Sentinel: the
// configuration operators use for a Redis with failover.
func TestRedisSentinel(t *testing.T) {
	master := redistest.StartServer(t)
	sentinel := redistest.StartSentinel(t, master)
	client := redistest.Client(t, master.URL())
	storetest.Run(t, func(t *testing.T) store.Store {
		prefix := redistest.Prefix(t)
		redistest.Cleanup(t, client, prefix)
		s, err := store.OpenRedis(t.Context(), store.RedisConfig{
			Addrs: []string{sentinel}, MasterName: redistest.SentinelMaster, Prefix: prefix,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TLS to Redis, with a CA the test generates: through addrs (which Sentinel
// and Cluster use as well) and through a rediss:// URL.
func TestRedisTLS(t *testing.T) {
	ca := certstest.NewCA(t, "redis")
	pair := ca.Server("redis", "127.0.0.1")
	_, tlsAddr := redistest.StartTLS(t, pair.CertFile, pair.KeyFile, ca.File)
	for name, cfg := range map[string]store.RedisConfig{
		"addrs": {Addrs: []string{tlsAddr}, TLS: store.RedisTLS{Enabled: true, CAFile: ca.File}},
		"url":   {URL: "rediss://" + tlsAddr + "/0", TLS: store.RedisTLS{CAFile: ca.File}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Prefix = redistest.Prefix(t)
			s, err := store.OpenRedis(t.Context(), cfg)
			if err != nil {
				t.Fatalf("open over TLS: %v", err)
			}
			defer s.Close()
			if err := s.PutNode(t.Context(), store.Node{ID: "n1", URL: "ws://n1/ws", State: store.StateActive}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Node(t.Context(), "n1"); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Without the CA, the server's certificate is not trusted.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if s, err := store.OpenRedis(ctx, store.RedisConfig{Addrs: []string{tlsAddr}, TLS: store.RedisTLS{Enabled: true}}); err == nil {
		s.Close()
		t.Fatal("TLS without the CA connected")
	}
}

// A Sentinel with a password of its own, monitoring a master with another.
func TestRedisSentinelCredentials(t *testing.T) {
	master := redistest.StartServerWith(t, "--requirepass", "master-pw")
	sentinel := redistest.StartSentinelAuth(t, master, "sentinel-pw", "master-pw")
	cfg := store.RedisConfig{Addrs: []string{sentinel}, MasterName: redistest.SentinelMaster, Password: "master-pw",
		SentinelPassword: "sentinel-pw", Prefix: redistest.Prefix(t)}
	s, err := store.OpenRedis(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open through a password-protected Sentinel: %v", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	cfg.SentinelPassword = ""
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if s, err := store.OpenRedis(ctx, cfg); err == nil {
		s.Close()
		t.Fatal("opened without the Sentinel's password")
	}
	if err := (store.RedisConfig{Addrs: []string{"h:1"}, SentinelPassword: "x"}).Validate(); err == nil || !strings.Contains(err.Error(), "store.redis.sentinel_password") {
		t.Fatalf("Validate of a Sentinel password without Sentinel: %v", err)
	}
}
