package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tetherhq/tether/internal/config"
	"github.com/tetherhq/tether/store"
)

// manifests returns every object of deploy/kubernetes, in file order.
func manifests(t *testing.T) []obj {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no kubernetes/*.yaml: %v", err)
	}
	var all []obj
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range decodeAll(t, f, b) {
			if o.str("apiVersion") == "" || o.str("kind") == "" || o.str("metadata", "name") == "" {
				t.Errorf("%s, document %d: apiVersion, kind and metadata.name are required", f, i+1)
			}
			if o.str("kind") != "Namespace" && o.str("metadata", "namespace") != "tether" {
				t.Errorf("%s: %s/%s is not in namespace tether", f, o.str("kind"), o.str("metadata", "name"))
			}
			all = append(all, o)
		}
	}
	return all
}

func find(t *testing.T, objs []obj, kind, name string) obj {
	t.Helper()
	for _, o := range objs {
		if o.str("kind") == kind && o.str("metadata", "name") == name {
			return o
		}
	}
	t.Fatalf("no %s %s in deploy/kubernetes", kind, name)
	return nil
}

// workloads are the objects with a pod template.
var workloads = []string{"Deployment", "StatefulSet", "Job", "DaemonSet"}

// containers returns the containers (and init containers) of a workload's
// pod template.
func containers(o obj) []obj {
	var out []obj
	for _, k := range []string{"initContainers", "containers"} {
		for _, c := range o.list("spec", "template", "spec", k) {
			if m, ok := asMap(c); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

// selects reports whether a label selector's matchLabels all hold in
// labels.
func selects(selector, labels obj) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// podEnv is the environment of a workload's first container as the
// kubelet gives it: the Secrets of envFrom, then env with $(VAR)
// references expanded and downward-API fields filled in for pod podName.
func podEnv(t *testing.T, objs []obj, w obj, podName string) map[string]string {
	t.Helper()
	c := containers(w)[0]
	env := map[string]string{}
	for _, ef := range c.list("envFrom") {
		ref := toObj(ef).str("secretRef", "name")
		if ref == "" {
			t.Fatalf("%s: envFrom without a secretRef", w.str("metadata", "name"))
		}
		for k, v := range find(t, objs, "Secret", ref).obj("stringData") {
			env[k] = fmt.Sprint(v)
		}
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.list("env") {
		e := toObj(e)
		v := e.str("value")
		switch e.str("valueFrom", "fieldRef", "fieldPath") {
		case "metadata.name":
			v = podName
		case "metadata.namespace":
			v = w.str("metadata", "namespace")
		}
		env[e.str("name")] = ref.ReplaceAllStringFunc(v, func(m string) string { return env[m[2:len(m)-1]] })
	}
	return env
}

// loadConfig parses the ConfigMap's tether.yaml with env as the process's
// environment and runs tether check on it.
func loadConfig(t *testing.T, text string, env map[string]string, who string) *config.File {
	t.Helper()
	vars := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`).FindAllStringSubmatch(text, -1)
	for _, m := range vars {
		if v, ok := env[m[1]]; ok {
			t.Setenv(m[1], v)
		} else {
			t.Setenv(m[1], "")
			os.Unsetenv(m[1])
		}
	}
	f, err := config.Parse([]byte(text), "tether-config/tether.yaml")
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	problems, notes := f.Check()
	if len(problems) > 0 {
		t.Fatalf("%s: tether check finds %q", who, problems)
	}
	t.Logf("%s: tether check notes %q", who, notes)
	return f
}

// portOf returns the port number of host:port.
func portOf(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// toObj returns v as an obj (nil if it is no map).
func toObj(v any) obj {
	m, _ := asMap(v)
	return m
}

// containerPort resolves a probe's port (a number or a port name).
func containerPort(c obj, port any) int {
	if n, ok := port.(int); ok {
		return n
	}
	for _, p := range c.list("ports") {
		p := toObj(p)
		if p.str("name") == port {
			return p.num("containerPort")
		}
	}
	return 0
}

// TestKubernetesManifests checks the invariants of deploy/kubernetes that
// a deployment relies on, with the real configuration parser: probes,
// drain and grace, disruption budgets, services, resources, images, and
// the configuration each pod gets.
func TestKubernetesManifests(t *testing.T) {
	objs := manifests(t)
	natsVersion := natsServerVersion(t)

	// Every workload: a selector matching its pods, and containers with
	// resources and pinned images.
	for _, o := range objs {
		if !slices.Contains(workloads, o.str("kind")) {
			continue
		}
		name := o.str("kind") + "/" + o.str("metadata", "name")
		if o.str("kind") != "Job" && !selects(o.obj("spec", "selector", "matchLabels"), o.obj("spec", "template", "metadata", "labels")) {
			t.Errorf("%s: spec.selector does not select its own pods", name)
		}
		if len(containers(o)) == 0 {
			t.Errorf("%s: no containers", name)
		}
		for _, c := range containers(o) {
			where := name + " container " + c.str("name")
			if why := pinned(c.str("image")); why != "" {
				t.Errorf("%s: image %q is not pinned: %s", where, c.str("image"), why)
			}
			for _, r := range [][]any{{"requests", "cpu"}, {"requests", "memory"}, {"limits", "memory"}} {
				if c.get(append([]any{"resources"}, r...)...) == nil {
					t.Errorf("%s: no resources.%s.%s", where, r[0], r[1])
				}
			}
			if o.str("kind") == "Job" {
				continue
			}
			// Every long-running container says when it is ready, with a
			// probe that points at a port it declares.
			probe := c.obj("readinessProbe")
			if probe == nil {
				t.Errorf("%s: no readinessProbe", where)
			} else if p := probe.get("httpGet", "port"); p != nil && containerPort(c, p) == 0 {
				t.Errorf("%s: readinessProbe port %v is not one of the container's ports", where, p)
			}
		}
	}
	if got := find(t, objs, "StatefulSet", "nats").str("spec", "template", "spec", "containers", 0, "image"); got != "nats:"+natsVersion+"-alpine" {
		t.Errorf("NATS image %q, want nats:%s-alpine, the nats-server of go.mod", got, natsVersion)
	}
	if n := find(t, objs, "StatefulSet", "nats").num("spec", "replicas"); n < 3 {
		t.Errorf("NATS: %d servers, want a cluster of at least 3", n)
	}

	cm := find(t, objs, "ConfigMap", "tether-config")
	text := cm.str("data", "tether.yaml")

	// The nodes: a readiness probe on /healthz at node.metrics_listen, a
	// preStop, and a termination grace longer than the drain.
	nodes := find(t, objs, "StatefulSet", "tether-node")
	replicas := nodes.num("spec", "replicas")
	if replicas < 2 {
		t.Errorf("tether-node: %d replicas", replicas)
	}
	nodeCfg := loadConfig(t, text, podEnv(t, objs, nodes, "tether-node-0"), "node pod tether-node-0")
	nc := containers(nodes)[0]
	if nc.str("readinessProbe", "httpGet", "path") != "/healthz" || containerPort(nc, nc.get("readinessProbe", "httpGet", "port")) != portOf(t, nodeCfg.Node.MetricsListen) {
		t.Errorf("tether-node: readiness %v, want GET /healthz on node.metrics_listen %s", nc.get("readinessProbe"), nodeCfg.Node.MetricsListen)
	}
	if containerPort(nc, "ws") != portOf(t, nodeCfg.Node.Listen) {
		t.Errorf("tether-node: port ws %d is not node.listen %s", containerPort(nc, "ws"), nodeCfg.Node.Listen)
	}
	preStop := nc.obj("lifecycle", "preStop")
	if preStop == nil {
		t.Fatal("tether-node: no preStop")
	}
	sleep := time.Duration(preStop.num("sleep", "seconds")) * time.Second
	drain := nodeCfg.Node.ShutdownGraceOrDefault() + 10*time.Second // what tether node allows its drain
	grace := time.Duration(nodes.num("spec", "template", "spec", "terminationGracePeriodSeconds")) * time.Second
	if grace <= sleep+drain {
		t.Errorf("tether-node: terminationGracePeriodSeconds %v, want more than preStop %v + node.shutdown_grace %v + 10s", grace, sleep, nodeCfg.Node.ShutdownGraceOrDefault())
	}
	pdb := false
	for _, o := range objs {
		if o.str("kind") == "PodDisruptionBudget" && selects(o.obj("spec", "selector", "matchLabels"), nodes.obj("spec", "template", "metadata", "labels")) {
			pdb = o.get("spec", "maxUnavailable") != nil || o.get("spec", "minAvailable") != nil
		}
	}
	if !pdb {
		t.Error("no PodDisruptionBudget with maxUnavailable or minAvailable selects the node pods")
	}
	if find(t, objs, "Service", "tether-node").str("spec", "clusterIP") != "None" {
		t.Error("Service tether-node is not headless: nodes need a name each")
	}

	// The seed names the StatefulSet's pods, with the URLs they register.
	var seed store.Seed
	dec := yaml.NewDecoder(strings.NewReader(cm.str("data", "seed.yaml")))
	dec.KnownFields(true)
	if err := dec.Decode(&seed); err != nil {
		t.Fatalf("seed.yaml: %v", err)
	}
	for i := range replicas {
		pod := fmt.Sprintf("tether-node-%d", i)
		env := podEnv(t, objs, nodes, pod)
		j := slices.IndexFunc(seed.Nodes, func(n store.SeedNode) bool { return n.ID == pod })
		if j < 0 || seed.Nodes[j].URL != env["TETHER_NODE_URL"] {
			t.Errorf("seed.yaml: node %s missing or with another URL than the pod's %s", pod, env["TETHER_NODE_URL"])
		}
	}
	if len(seed.Nodes) != replicas {
		t.Errorf("seed.yaml: %d nodes for %d node pods", len(seed.Nodes), replicas)
	}
	withSeed := *nodeCfg
	withSeed.Seed = &seed
	if problems, _ := withSeed.Check(); len(problems) > 0 {
		t.Errorf("seed.yaml with tether.yaml: %q", problems)
	}
	job := find(t, objs, "Job", "tether-seed")
	if args := containers(job)[0].list("args"); !slices.Contains(args, any("seed")) || !slices.Contains(args, any("/etc/tether-k8s/seed.yaml")) {
		t.Errorf("Job tether-seed: args %v do not apply seed.yaml", args)
	}

	// The directory: a Deployment behind a Service, ready on /healthz.
	dir := find(t, objs, "Deployment", "tether-directory")
	dirCfg := loadConfig(t, text, podEnv(t, objs, dir, "tether-directory-x"), "directory pod")
	dc := containers(dir)[0]
	if dc.str("readinessProbe", "httpGet", "path") != "/healthz" || containerPort(dc, dc.get("readinessProbe", "httpGet", "port")) != portOf(t, dirCfg.Directory.Listen) {
		t.Errorf("tether-directory: readiness %v, want GET /healthz on directory.listen", dc.get("readinessProbe"))
	}
	svc := find(t, objs, "Service", "tether-directory")
	if !selects(svc.obj("spec", "selector"), dir.obj("spec", "template", "metadata", "labels")) {
		t.Error("Service tether-directory does not select the directory's pods")
	}
	if containerPort(dc, svc.get("spec", "ports", 0, "targetPort")) != portOf(t, dirCfg.Directory.Listen) {
		t.Error("Service tether-directory does not target directory.listen")
	}
	if !strings.HasPrefix(containers(job)[0].str("args", 2), "http://tether-directory:") {
		t.Errorf("Job tether-seed does not talk to the tether-directory Service: %v", containers(job)[0].get("args"))
	}

	// The balancer: two replicas (one leads), ready on /healthz.
	bal := find(t, objs, "Deployment", "tether-balancer")
	if n := bal.num("spec", "replicas"); n != 2 {
		t.Errorf("tether-balancer: %d replicas, want 2", n)
	}
	balCfg := loadConfig(t, text, podEnv(t, objs, bal, "tether-balancer-x"), "balancer pod")
	bc := containers(bal)[0]
	if bc.str("readinessProbe", "httpGet", "path") != "/healthz" || containerPort(bc, bc.get("readinessProbe", "httpGet", "port")) != portOf(t, balCfg.Balancer.MetricsListen) {
		t.Errorf("tether-balancer: readiness %v, want GET /healthz on balancer.metrics_listen", bc.get("readinessProbe"))
	}

	// NATS and Redis, as the configuration names them.
	natsSts := find(t, objs, "StatefulSet", "nats")
	for _, u := range strings.Split(strings.Join(nodeCfg.NATS.URLs, ","), ",") {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		host, _, _ := strings.Cut(pu.Hostname(), ".")
		i, err := strconv.Atoi(strings.TrimPrefix(host, "nats-"))
		if !strings.HasSuffix(pu.Hostname(), ".nats") || err != nil || i >= natsSts.num("spec", "replicas") || pu.Port() != "4222" {
			t.Errorf("nats.urls: %s is not a pod of the nats StatefulSet", u)
		}
	}
	find(t, objs, "Service", "nats")
	ru, err := url.Parse(nodeCfg.Store.Redis.URL)
	if err != nil || ru.Hostname() != "redis" || ru.Port() != strconv.Itoa(find(t, objs, "Service", "redis").num("spec", "ports", 0, "port")) {
		t.Errorf("store.redis.url %q is not the redis Service", nodeCfg.Store.Redis.URL)
	}
}

// TestKubectlDryRun runs `kubectl apply --dry-run=client --validate=false`
// on every manifest, as an operator would before applying them, against a
// stand-in API server that only answers discovery (which kinds exist) and
// "not found": no cluster needed. Without kubectl it says so and skips.
func TestKubectlDryRun(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed: the manifests got TestKubernetesManifests's checks, not kubectl's dry run")
	}
	objs := manifests(t)
	srv := httptest.NewServer(fakeAPIServer(t))
	defer srv.Close()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: fake, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
`, srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectl, "apply", "--dry-run=client", "--validate=false", "-f", "kubernetes/")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HOME="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl apply --dry-run=client: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	for _, o := range objs {
		line := fmt.Sprintf("%s/%s created (dry run)", strings.ToLower(o.str("kind")), o.str("metadata", "name"))
		if !strings.Contains(stdout.String(), line) && !strings.Contains(stdout.String(), strings.Replace(line, "/", ".", 1)) &&
			!regexp.MustCompile(regexp.QuoteMeta(strings.ToLower(o.str("kind")))+`\.[a-z.]+/`+regexp.QuoteMeta(o.str("metadata", "name"))+` created \(dry run\)`).MatchString(stdout.String()) {
			t.Errorf("kubectl did not create %s %s:\n%s", o.str("kind"), o.str("metadata", "name"), stdout.String())
		}
	}
	t.Logf("kubectl apply --dry-run=client:\n%s", stdout.String())
}

// fakeAPIServer answers kubectl's discovery with the kinds tether's
// manifests may use (those of Kubernetes 1.30 and later) and every other
// request with 404, so that kubectl maps each object to its resource and
// would create it. A kind it does not list fails kubectl's mapping.
func fakeAPIServer(t *testing.T) http.Handler {
	type res struct {
		Name       string   `json:"name"`
		Singular   string   `json:"singularName"`
		Namespaced bool     `json:"namespaced"`
		Kind       string   `json:"kind"`
		Verbs      []string `json:"verbs"`
	}
	verbs := []string{"create", "delete", "get", "list", "patch", "update", "watch"}
	r := func(name, kind string, namespaced bool) res {
		return res{name, strings.ToLower(kind), namespaced, kind, verbs}
	}
	groups := map[string][]res{
		"v1": {r("namespaces", "Namespace", false), r("configmaps", "ConfigMap", true), r("secrets", "Secret", true),
			r("services", "Service", true), r("serviceaccounts", "ServiceAccount", true)},
		"apps/v1":   {r("deployments", "Deployment", true), r("statefulsets", "StatefulSet", true), r("daemonsets", "DaemonSet", true)},
		"policy/v1": {r("poddisruptionbudgets", "PodDisruptionBudget", true)},
		"batch/v1":  {r("jobs", "Job", true)},
	}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /api", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]any{"kind": "APIVersions", "versions": []string{"v1"},
			"serverAddressByClientCIDRs": []map[string]string{{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}}})
	})
	mux.HandleFunc("GET /apis", func(w http.ResponseWriter, _ *http.Request) {
		var list []map[string]any
		for gv := range groups {
			g, v, ok := strings.Cut(gv, "/")
			if !ok {
				continue
			}
			ver := map[string]string{"groupVersion": gv, "version": v}
			list = append(list, map[string]any{"name": g, "versions": []any{ver}, "preferredVersion": ver})
		}
		reply(w, map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
	})
	for gv, rs := range groups {
		p := "/apis/" + gv
		if gv == "v1" {
			p = "/api/v1"
		}
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, _ *http.Request) {
			reply(w, map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": rs})
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			t.Errorf("kubectl's dry run sent %s %s", req.Method, req.URL)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
	})
	return mux
}
