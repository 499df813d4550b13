package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/internal/devcluster"
	"github.com/tetherhq/tether/store/redistest"
)

// devArgs are `tether dev` flags for a test: every port is a free one.
var devArgs = []string{"dev", "--duration", "15s", "--json", "--quiet",
	"--nats-port", "0", "--nats-monitor-port", "0", "--directory-port", "0", "--node-port", "0"}

// runDev runs `tether dev` as a user does, in a child process, and returns
// its JSON summary.
func runDev(t *testing.T, extra ...string) devcluster.Summary {
	t.Helper()
	s, _ := runDevOut(t, extra...)
	return s
}

// runDevOut is runDev that also returns what `tether dev` logged.
func runDevOut(t *testing.T, extra ...string) (devcluster.Summary, string) {
	t.Helper()
	cmd := tetherCmd(t, append(append([]string{}, devArgs...), extra...)...)
	cmd.Env = append(cmd.Env, "TETHER_DEV_STATE="+filepath.Join(t.TempDir(), "dev.json"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tether dev: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("tether dev did not stop by itself\nstderr:\n%s", stderr.String())
	}
	var s devcluster.Summary
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &s); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var keys map[string]any
	_ = json.Unmarshal(stdout.Bytes(), &keys)
	for _, k := range []string{"devices", "connected", "pushes", "acked", "offline", "lost", "p50_ms", "p99_ms"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("summary lacks key %q: %s", k, stdout.String())
		}
	}
	t.Logf("summary: %s", bytes.TrimSpace(stdout.Bytes()))
	return s, stderr.String()
}

func TestDev(t *testing.T) {
	t.Parallel()
	s := runDev(t)
	if s.Connected == 0 || s.Acked == 0 || s.Lost != 0 || s.Errors != 0 {
		t.Fatalf("summary = %+v", s)
	}
	if s.Connected != s.Devices {
		t.Errorf("only %d of %d devices connected", s.Connected, s.Devices)
	}
}

func TestDevWithRedis(t *testing.T) {
	t.Parallel()
	url := redistest.Start(t)
	prefix := redistest.Prefix(t)
	cfgFile := filepath.Join(t.TempDir(), "dev.yaml")
	cfg := string(config.DevYAML()) + fmt.Sprintf("store:\n  redis:\n    prefix: %q\n", prefix)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := runDev(t, "--redis", url, "--config", cfgFile)
	if s.Acked == 0 || s.Lost != 0 || s.Store != "redis" {
		t.Fatalf("summary = %+v", s)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var hasMap, hasNodes bool
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) {
			t.Fatalf("key %q outside the prefix", k)
		}
		hasMap = hasMap || strings.HasSuffix(k, "{map}:services")
		hasNodes = hasNodes || strings.HasSuffix(k, "{map}:nodes")
	}
	if !hasMap || !hasNodes {
		t.Fatalf("keys under %q: %v", prefix, keys)
	}
	t.Logf("keys under %s: %v", prefix, keys)
}
