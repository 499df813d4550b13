package deploy_test

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/config"
)

// composeFile decodes the repository's docker-compose.yml.
func composeFile(t *testing.T) obj {
	t.Helper()
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	docs := decodeAll(t, "docker-compose.yml", b)
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yml: %d documents", len(docs))
	}
	return docs[0]
}

// TestCompose checks docker-compose.yml: pinned images (NATS at the
// nats-server version of go.mod), a healthcheck on every service of the
// default stack (tether's through `tether healthcheck` at the address
// configs/compose.yaml or its flags give it), start order on health, and
// the nodes' file limit and stop grace.
// configs/compose.yaml must pass tether check with the environment the
// file gives the tether services.
func TestCompose(t *testing.T) {
	c := composeFile(t)
	services := c.obj("services")
	if len(services) == 0 {
		t.Fatal("no services")
	}
	if got, want := services.str("nats", "image"), "nats:"+natsServerVersion(t)+"-alpine"; got != want {
		t.Errorf("nats image %q, want %q: the nats-server tether embeds and tests (go.mod)", got, want)
	}

	// The tether services' environment, with the defaults of ${X:-d}.
	env := map[string]string{}
	for k, v := range c.obj("x-tether-env") {
		s, missing, err := config.Expand(v.(string), func(string) (string, bool) { return "", false })
		if err != nil || len(missing) > 0 {
			t.Fatalf("x-tether-env.%s: %q: %v (unset: %v)", k, v, err, missing)
		}
		env[k] = s
	}
	text, err := os.ReadFile("../configs/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.Parse(text, "configs/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if problems, _ := cfg.Check(); len(problems) > 0 {
		t.Fatalf("configs/compose.yaml with docker-compose.yml's environment: %q", problems)
	}
	listen := map[string]string{ // command -> where its /healthz is served
		"node": cfg.Node.MetricsListen, "directory": cfg.Directory.Listen, "balancer": cfg.Balancer.MetricsListen,
	}
	if sim := services.list("simulator", "command"); len(sim) > 0 {
		if i := slices.Index(sim, any("--metrics-listen")); i >= 0 && i+1 < len(sim) {
			listen["simulate"] = sim[i+1].(string)
		}
	}

	for name := range services {
		s := services.obj(name)
		if s.get("profiles") != nil {
			// Optional extras (the monitoring profile): checked when they
			// have a healthcheck or a pinned image, not required to.
			t.Logf("%s (profiles %v): image %q, healthcheck %v", name, s.get("profiles"), s.str("image"), s.get("healthcheck", "test"))
			continue
		}
		if img := s.str("image"); img != "" {
			if why := pinned(img); why != "" {
				t.Errorf("%s: image %q is not pinned: %s", name, img, why)
			}
		} else if s.get("build") == nil {
			t.Errorf("%s: neither image nor build", name)
		}
		test := s.list("healthcheck", "test")
		if len(test) < 2 || test[0] != "CMD" {
			t.Errorf("%s: no healthcheck test [\"CMD\", ...]: %v", name, s.get("healthcheck"))
			continue
		}
		if s.get("build") == nil {
			continue
		}
		// A tether service: the distroless image has no shell or curl.
		if test[1] != "/usr/local/bin/tether" || test[2] != "healthcheck" || len(test) != 4 {
			t.Errorf("%s: healthcheck %v, want tether healthcheck URL", name, test)
			continue
		}
		cmd := s.str("command", 0)
		u, err := url.Parse(test[3].(string))
		if err != nil || u.Path != "/healthz" {
			t.Errorf("%s: healthcheck URL %v is not a /healthz", name, test[3])
			continue
		}
		if where, ok := listen[cmd]; ok {
			if u.Hostname() != "127.0.0.1" || ":"+u.Port() != where {
				t.Errorf("%s: healthcheck %s, but tether %s serves /healthz on %q", name, u, cmd, where)
			}
		}
		for dep, cond := range s.obj("depends_on") {
			if toObj(cond).str("condition") != "service_healthy" {
				t.Errorf("%s: depends on %s without condition service_healthy", name, dep)
			}
		}
		if cmd != "node" {
			continue
		}
		for _, k := range []string{"soft", "hard"} {
			if n := s.num("ulimits", "nofile", k); n < 65536 {
				t.Errorf("%s: ulimits.nofile.%s %d, want room for tens of thousands of connections", name, k, n)
			}
		}
		grace, err := time.ParseDuration(s.str("stop_grace_period"))
		if drain := cfg.Node.ShutdownGraceOrDefault() + 10*time.Second; err != nil || grace <= drain {
			t.Errorf("%s: stop_grace_period %q, want more than node.shutdown_grace + 10s (%v), what tether node allows its drain", name, s.str("stop_grace_period"), drain)
		}
	}
	for _, want := range []string{"nats", "redis", "directory", "node-1", "node-2"} {
		if services.obj(want) == nil {
			t.Errorf("no %s service", want)
		}
	}
}

// TestComposeConfig validates docker-compose.yml with Debian's
// docker-compose (`docker-compose config`), which needs no Docker engine.
// .ci/run installs it.
func TestComposeConfig(t *testing.T) {
	dc, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatalf("docker-compose is not installed (.ci/run installs Debian's): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	abs, err := filepath.Abs("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, dc, "-f", abs, "config")
	// Only the file's own defaults: no .env, no variables of the caller.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return strings.HasPrefix(k, "TETHER_") || strings.HasSuffix(k, "_SECRET") || strings.HasPrefix(k, "COMPOSE_")
	})
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "condition: service_healthy") || !strings.Contains(stdout.String(), "nofile") {
		t.Fatalf("docker-compose config lost the healthchecks or ulimits:\n%s", stdout.String())
	}
}
