package config_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/token"
)

func TestParseStrict(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown top-level key", "nats:\n  prefix: tether\nnodes:\n  id: n1\n", []string{"line 3: nodes: unknown key", "field nodes not found"}},
		{"unknown nested key", "node:\n  id: n1\n  listen: \":0\"\n  ping_intervall: 5s\n", []string{"line 4: node.ping_intervall: unknown key", "field ping_intervall not found"}},
		{"unknown key in a service", "services:\n  vacuum:\n    keys:\n      - id: k\n        secret: x\n", []string{"line 5: services.vacuum.keys[0].secret: unknown key", "field secret not found"}},
		{"unknown key in a flow map", "balancer:\n  connections: {ratio: 2, min_bussy: 50}\n", []string{"line 2: balancer.connections.min_bussy: unknown key"}},
		{"wrong type", "node:\n  capacity: lots\n", []string{"line 2: node.capacity:", "lots"}},
		{"wrong type in a flow map", "balancer:\n  connections: {ratio: 2, min_busy: many}\n", []string{"line 2: balancer.connections.min_busy:", "many"}},
		{"long wrong value", "node:\n  capacity: twenty-thousand-and-one\n", []string{"line 2: node.capacity:"}},
		{"bad duration", "node:\n  ping_interval: soon\n", []string{"line 2: node.ping_interval:", "soon"}},
		{"syntax", "nats:\n  urls: [\n", []string{"line"}},
		{"tab indentation", "nats:\n\tprefix: x\n", []string{"line 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := config.Parse([]byte(tc.yaml), "test.yaml")
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", f)
			}
			for _, w := range append(tc.want, "config test.yaml") {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestParseAllProblems: a file with several problems gets them all in one
// error, each with its key's path.
func TestParseAllProblems(t *testing.T) {
	yaml := "node:\n  id: ${TETHER_TEST_UNSET_A}\n  capacity: lots\n  lisen: \":1\"\ndirectory:\n  admin_token: \"${TETHER_TEST_BAD:?required}\"\n"
	_, err := config.Parse([]byte(yaml), "all.yaml")
	if err == nil {
		t.Fatal("Parse accepted it")
	}
	for _, want := range []string{
		"config all.yaml: ",
		"line 4: node.lisen: unknown key",
		"line 3: node.capacity: cannot unmarshal",
		"line 2: node.id: environment variable TETHER_TEST_UNSET_A is not set",
		`line 6: directory.admin_token: config: bad reference: "${TETHER_TEST_BAD:?required}"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"SET": "value", "EMPTY": "", "PORT": "4222"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct {
		in, want string
		missing  []string
		bad      bool
	}{
		{in: "plain", want: "plain"},
		{in: "${SET}", want: "value"},
		{in: "a-${SET}-${PORT}-b", want: "a-value-4222-b"},
		{in: "${EMPTY}", want: ""},
		{in: "${UNSET}", want: "", missing: []string{"UNSET"}},
		{in: "${UNSET}${UNSET}${OTHER}", want: "", missing: []string{"UNSET", "OTHER"}},
		{in: "${SET:-d}", want: "value"},
		{in: "${EMPTY:-d}", want: "d"},
		{in: "${UNSET:-d}", want: "d"},
		{in: "${UNSET:-}", want: ""},
		{in: "${UNSET:-nats://a:4222,nats://b:4222}", want: "nats://a:4222,nats://b:4222"},
		{in: "${UNSET:-has $ and :- and -}", want: "has $ and :- and -"},
		{in: "${SET-d}", want: "value"},
		{in: "${EMPTY-d}", want: ""},
		{in: "${UNSET-d}", want: "d"},
		{in: "$${SET}", want: "${SET}"},
		{in: "pa$$word $SET $", want: "pa$$word $SET $"},
		{in: "${UNSET:?required}", bad: true},
		{in: "${UNSET?required}", bad: true},
		{in: "${UNSET:=d}", bad: true},
		{in: "${UNSET:+d}", bad: true},
		{in: "${SET", bad: true},
		{in: "${}", bad: true},
		{in: "${1X}", bad: true},
		{in: "${X Y}", bad: true},
		{in: "${UNSET:-${SET}}", bad: true},
	} {
		got, missing, err := config.Expand(tc.in, lookup)
		if tc.bad {
			if !errors.Is(err, config.ErrBadReference) {
				t.Errorf("Expand(%q) = %q, %v, %v; want ErrBadReference", tc.in, got, missing, err)
			}
			continue
		}
		if err != nil || got != tc.want || !slices.Equal(missing, tc.missing) {
			t.Errorf("Expand(%q) = %q, %v, %v; want %q, %v", tc.in, got, missing, err, tc.want, tc.missing)
		}
	}
}

// TestParseEnvDefault: ${NAME:-default} in a file; an unquoted default is
// typed as if written in the file.
func TestParseEnvDefault(t *testing.T) {
	t.Setenv("TETHER_TEST_SET", "node-9")
	t.Setenv("TETHER_TEST_EMPTY", "")
	f, err := config.Parse([]byte("node:\n  id: ${TETHER_TEST_SET:-node-1}\n  class: ${TETHER_TEST_EMPTY:-standard}\n  capacity: ${TETHER_TEST_UNSET_CAP:-20000}\n  path: \"${TETHER_TEST_UNSET_PATH-/ws}\"\n"), "d.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if f.Node.ID != "node-9" || f.Node.Class != "standard" || f.Node.Capacity != 20000 || f.Node.Path != "/ws" {
		t.Fatalf("node = %+v", f.Node)
	}
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"${A}", "${A:-b}", "${A-b}", "$${A}", "${A:?x}", "${", "x${A}y${B:-}z", "$$$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lookup := func(k string) (string, bool) { return "v", k == "A" }
		out, _, err := config.Expand(s, lookup)
		if err != nil {
			if !errors.Is(err, config.ErrBadReference) {
				t.Fatalf("Expand(%q): %v does not wrap ErrBadReference", s, err)
			}
			return
		}
		if !strings.Contains(s, "${") && out != s {
			t.Fatalf("Expand(%q) = %q: a value without ${ changed", s, out)
		}
	})
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing but a comment\n", "---\n"} {
		f, err := config.Parse([]byte(in), "empty")
		if err != nil || f == nil || f.Node.ID != "" || f.Services != nil {
			t.Fatalf("Parse(%q) = %+v, %v", in, f, err)
		}
	}
}

func TestParseEnv(t *testing.T) {
	t.Setenv("TETHER_TEST_SECRET", "from-the-environment-0123456789abcdef")
	t.Setenv("TETHER_TEST_ID", "node-7")
	t.Setenv("TETHER_TEST_CAP", "20000")
	t.Setenv("TETHER_TEST_EMPTY", "")
	yaml := `
services:
  vacuum:
    keys:
      - id: vacuum-1
        hmac_secret: ${TETHER_TEST_SECRET}
node:
  id: ${TETHER_TEST_ID}
  capacity: ${TETHER_TEST_CAP}
  class: "${TETHER_TEST_ID}-${TETHER_TEST_ID}"
  public_url: ws://${TETHER_TEST_ID}:18080/ws
directory:
  admin_token: ${TETHER_TEST_EMPTY}
nats:
  prefix: $TETHER_TEST_ID
`
	f, err := config.Parse([]byte(yaml), "env.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Services["vacuum"].Keys[0].HMACSecret; got != "from-the-environment-0123456789abcdef" {
		t.Errorf("hmac_secret = %q", got)
	}
	if f.Node.ID != "node-7" || f.Node.Capacity != 20000 || f.Node.Class != "node-7-node-7" || f.Node.PublicURL != "ws://node-7:18080/ws" {
		t.Errorf("node = %+v", f.Node)
	}
	if f.Directory.AdminToken != "" {
		t.Errorf("admin_token = %q", f.Directory.AdminToken)
	}
	// Only ${NAME} is replaced.
	if f.NATS.Prefix != "$TETHER_TEST_ID" {
		t.Errorf("prefix = %q", f.NATS.Prefix)
	}

	// Missing variables are named, all of them.
	_, err = config.Parse([]byte("node:\n  id: ${TETHER_TEST_NOPE_1}\n  class: ${TETHER_TEST_NOPE_2}\n"), "env.yaml")
	if err == nil || !strings.Contains(err.Error(), "TETHER_TEST_NOPE_1") || !strings.Contains(err.Error(), "TETHER_TEST_NOPE_2") ||
		!strings.Contains(err.Error(), "env.yaml") {
		t.Fatalf("missing variables: %v", err)
	}
}

// TestParseEnvInComment pins a fix: ${NAME} was replaced in the raw text,
// comments included, so a commented-out key (configs/tether.yaml has
// "# password: ${NATS_PASSWORD}") made its variable required.
func TestParseEnvInComment(t *testing.T) {
	yaml := "nats:\n  prefix: tether\n  # password: ${TETHER_TEST_UNSET_IN_COMMENT}\n"
	f, err := config.Parse([]byte(yaml), "c.yaml")
	if err != nil {
		t.Fatalf("a variable in a comment is required: %v", err)
	}
	if f.NATS.Prefix != "tether" || f.NATS.Password != "" {
		t.Fatalf("nats = %+v", f.NATS)
	}
}

// TestParseEnvValueIsLiteral pins a fix: a value was pasted into the YAML
// text, so YAML syntax in it changed the document: " #" cut a secret short
// silently, a leading "*" or "&" was read as an alias or anchor, a newline
// could add keys.
func TestParseEnvValueIsLiteral(t *testing.T) {
	for _, v := range []string{
		"secret-with #hash-0123456789abcdefghij",
		"*starts-like-an-alias-0123456789abcdef",
		"&starts-like-an-anchor-0123456789abcdef",
		"has: colon-space-0123456789abcdefghijkl",
		`"quoted"-0123456789abcdefghijklmnopqrstu`,
		"x-0123456789abcdefghijklmnopqrstuvwxyz\n        id: injected",
	} {
		t.Setenv("TETHER_TEST_SECRET", v)
		yaml := "services:\n  vacuum:\n    keys:\n      - hmac_secret: ${TETHER_TEST_SECRET}\n        id: vacuum-1\n"
		f, err := config.Parse([]byte(yaml), "s.yaml")
		if err != nil {
			t.Fatalf("value %q: %v", v, err)
		}
		if k := f.Services["vacuum"].Keys[0]; k.HMACSecret != v || k.ID != "vacuum-1" {
			t.Fatalf("value %q became %+v", v, k)
		}
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t.yaml")
	if err := os.WriteFile(p, []byte("node:\n  id: n1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(p)
	if err != nil || f.Node.ID != "n1" {
		t.Fatalf("Load = %+v, %v", f, err)
	}
	if _, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("Load(missing) = %v", err)
	}
}

func TestDev(t *testing.T) {
	f, err := config.Dev()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.ValidateCommon(); err != nil {
		t.Fatal(err)
	}
	kr, err := f.Keyring()
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"aircon", "tv", "vacuum"} {
		if !kr.HasService(svc) {
			t.Fatalf("dev keyring lacks %s (has %v)", svc, kr.Services())
		}
		raw, err := kr.Issue(svc, "d-1", token.IssueOptions{TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if c, err := kr.Verify(raw); err != nil || c.Service != svc {
			t.Fatalf("%s: %+v, %v", svc, c, err)
		}
	}
	if got := kr.Services(); len(got) != 3 {
		t.Fatalf("services %v", got)
	}
	if rs := f.RegistrationSecrets(); len(rs) != 3 || rs["vacuum"] == "" {
		t.Fatalf("registration secrets %v", rs)
	}
	// The seed's node URLs are filled in by tether dev, so it is not
	// validated here.
	if f.Seed == nil || len(f.Seed.Nodes) != 5 || len(f.Seed.Services) != 3 || f.Seed.Nodes[4].State != "standby" {
		t.Fatalf("seed %+v: want node-1 to node-5, node-5 on standby", f.Seed)
	}
	if err := f.Balancer.Validate(); err != nil || f.Balancer.Interval == 0 {
		t.Fatalf("dev balancer section %+v: %v", f.Balancer, err)
	}
	if f.Directory.AdminToken == "" {
		t.Fatal("no admin token")
	}

	// DevYAML is a copy.
	b := config.DevYAML()
	copy(b, "garbage: [")
	if _, err := config.Dev(); err != nil {
		t.Fatalf("Dev after changing DevYAML's result: %v", err)
	}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// plausible returns a value for an environment variable a sample file uses.
func plausible(name string) string {
	switch {
	case strings.HasSuffix(name, "NATS_URLS"):
		return "nats://nats-1:4222,nats://nats-2:4222"
	case strings.HasSuffix(name, "REDIS_URL"):
		return "redis://redis:6379/0"
	case strings.HasSuffix(name, "NODE_URL"):
		return "ws://node-1.example:18080/ws"
	case strings.HasSuffix(name, "NODE_ID"):
		return "node-1"
	}
	return "env-" + strings.ToLower(name) + "-0123456789abcdefghijklmnopqrstuvwxyz"
}

// TestConfigFiles parses every sample configuration with the variables it
// uses set, and validates every section it fills in.
func TestConfigFiles(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no configs/*.yaml: %v", err)
	}
	for _, p := range files {
		t.Run(filepath.Base(p), func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			// Set only the variables used outside comments.
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), "#") {
					continue
				}
				for _, m := range envRef.FindAllStringSubmatch(line, -1) {
					t.Setenv(m[1], plausible(m[1]))
				}
			}
			f, err := config.Load(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.ValidateCommon(); err != nil {
				t.Fatal(err)
			}
			if len(f.Services) == 0 {
				t.Fatal("no services")
			}
			if f.Node.ID != "" || f.Node.Listen != "" {
				node := f.Node
				if node.ID == "" {
					node.ID = "node-1" // given with --id
				}
				if err := node.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			if f.Directory.Listen != "" || f.Directory.AdminToken != "" {
				if err := f.Directory.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			if f.Seed != nil {
				if err := f.Seed.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Balancer.Validate(); err != nil {
				t.Fatal(err)
			}
			if f.Store.Redis == nil || f.Store.Redis.URL != "redis://redis:6379/0" {
				t.Fatalf("store.redis = %+v", f.Store.Redis)
			}
		})
	}
}

func TestValidateCommon(t *testing.T) {
	f, err := config.Parse([]byte(`
nats:
  urls: ["127.0.0.1:4222"]
services:
  vacuum:
    keys:
      - hmac_secret: short
store:
  redis:
    url: http://redis
`), "bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = f.ValidateCommon()
	for _, want := range []string{"nats.urls", "services.vacuum.keys[0]: hmac_secret", "store.redis.url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateCommon = %v, want it to name %s", err, want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add(config.DevYAML())
	for _, p := range []string{"../../configs/tether.yaml", "../../configs/compose.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("node:\n  id: ${HOME}\n  capacity: ${NOPE}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("services: {vacuum: {keys: [{ed25519_public: AAAA}]}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cf, err := config.Parse(b, "fuzz")
		if err != nil {
			return
		}
		_ = cf.ValidateCommon()
		_ = cf.Node.Validate()
		_ = cf.Directory.Validate()
		if cf.Seed != nil {
			_ = cf.Seed.Validate()
		}
	})
}

// docker-compose.yml is a valid compose file, with and without the
// monitoring profile (docker-compose checks it; .ci/run installs it).
func TestComposeFileValidates(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatal("docker-compose not found: install Debian's docker-compose (.ci/run does)")
	}
	for _, args := range [][]string{{"config", "-q"}, {"--profile", "monitoring", "config", "-q"}} {
		cmd := exec.Command(bin, append([]string{"-f", "../../docker-compose.yml", "--project-directory", "../.."}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker-compose %v: %v\n%s", args, err, out)
		}
	}
}
